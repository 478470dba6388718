"""ShapesWorld, the CPU-sized text-to-image world (docs/toy_world.md).

- ``world``: WorldSpec, GenEval-template captions + metadata, train/eval split, numpy renderer.
- ``image_tokenizer``: PatchTokenizer, p x p patches <-> k-means codebook codes.
- ``text_tokenizer``: WordTokenizer (word-level, pad / bos / eos / unk) and ``shapes_layout``, the MMaDA-style
  sequence layout over both vocabularies.
- ``shapes_eval``: ShapesEvaluator, colour-segmentation detections fed to the GenEval rules.
"""

from maskgrpo.scoring.geneval_rules import format_table
from maskgrpo.toy.image_tokenizer import PatchTokenizer
from maskgrpo.toy.shapes_eval import ImageResult, ShapesDetector, ShapesEvaluator
from maskgrpo.toy.text_tokenizer import WordTokenizer, shapes_layout
from maskgrpo.toy.world import (
    SceneObject,
    WorldSpec,
    enumerate_prompts,
    render,
    render_batch,
    render_scene,
    sample_scene,
    split_prompts,
    swatches,
    tokenizer_fit_images,
)

__all__ = [
    "ImageResult",
    "PatchTokenizer",
    "SceneObject",
    "ShapesDetector",
    "ShapesEvaluator",
    "WordTokenizer",
    "WorldSpec",
    "enumerate_prompts",
    "format_table",
    "render",
    "render_batch",
    "render_scene",
    "sample_scene",
    "shapes_layout",
    "split_prompts",
    "swatches",
    "tokenizer_fit_images",
]

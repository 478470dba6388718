"""Installable package for the HT-GRPO reference implementation (MaskGRPO baseline + htgrpo_patch).

Install through ``bash scripts/setup_env.sh`` rather than by hand: that script pins the CPU torch build on
machines without a GPU and never replaces a CUDA torch that is already installed (see README, "Install").
"""

from setuptools import find_packages, setup

setup(
    name="htgrpo",
    version="0.1.0",
    description="Reference implementation of HT-GRPO (Sketch Then Paint) as a patch over a clean-room MaskGRPO",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["maskgrpo", "maskgrpo.*", "htgrpo_patch", "htgrpo_patch.*", "eval", "eval.*"]),
    package_data={"eval": ["geneval_facts.json"]},  # read by eval.geneval_train_prompts
    install_requires=[
        "torch>=2.4",
        "transformers>=5.0,<6",
        "safetensors>=0.4",
        "deepspeed>=0.17,<0.20",
        "peft>=0.17",
        "numpy>=1.26",
        "pyyaml>=6.0",
        "pillow>=10.0",
        "tqdm>=4.66",
        "matplotlib>=3.8",
        "wandb>=0.19",
    ],
    extras_require={
        "test": ["pytest>=8.0", "pytest-xdist>=3.5", "ruff>=0.6"],
        "lumina": ["diffusers>=0.32"],
    },
)

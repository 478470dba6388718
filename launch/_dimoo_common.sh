# Sourced by launch/dimoo_{maskgrpo,htgrpo}.sh: Lumina-DiMOO defaults (MODEL_PATH, VQ_PATH = the vqvae/ subfolder
# when empty, HEIGHT, WIDTH) on top of the shared GPU launcher (launch/_gpu_common.sh); the caller runs gpu_launch.
MODEL_PATH="${MODEL_PATH:-Alpha-VLLM/Lumina-DiMOO}"
VQ_PATH="${VQ_PATH:-}"
HEIGHT="${HEIGHT:-1024}"
WIDTH="${WIDTH:-1024}"
source "$(dirname "${BASH_SOURCE[0]}")/_gpu_common.sh"
[[ "$HEIGHT" =~ ^[1-9][0-9]*$ && "$WIDTH" =~ ^[1-9][0-9]*$ ]] ||
  die "HEIGHT and WIDTH must be positive integers (pixels, multiples of 16), got '$HEIGHT' x '$WIDTH'"
LAUNCH_EXTRA_OVERRIDES=("backbone.options.height=$HEIGHT" "backbone.options.width=$WIDTH")

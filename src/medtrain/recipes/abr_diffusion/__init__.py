"""abr-diffusion: conditional diffusion + peak/class/threshold heads for auditory brainstem responses (seed 003)."""

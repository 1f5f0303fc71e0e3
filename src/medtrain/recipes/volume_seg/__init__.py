"""volume-seg: nnU-Net-style auto-planned multi-task U-Net for 2-D/3-D volumes (seed 002)."""

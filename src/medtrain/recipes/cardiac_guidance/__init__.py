"""cardiac-guidance: 6-DOF ultrasound probe guidance from image pairs, cross-patient validated (seed 004)."""

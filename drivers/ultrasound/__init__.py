"""Ultrasound: Cicada interface, sequences and simulators (shear wave, imaging, compression)."""

"""Recipe ultrasound-ae: raw multi-channel ultrasound → filtered, tokenized sequences → CNN autoencoder embeddings."""

"""Code shared by passerelle's Triton models, installed into Triton's Python environment."""

"""Models: encoders (backbones), objectives (losses of embeddings) and the pre-training method."""

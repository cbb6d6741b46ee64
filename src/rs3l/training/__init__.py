"""Training stages: streaming data (``data``), pre-training (``pretrain``) and fine-tuning."""

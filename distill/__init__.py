"""distill: reproduce the DeepSeek-R1 reasoning-distillation recipe end to end."""

__version__ = "0.1.0"

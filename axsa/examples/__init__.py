"""Example models for `axsa eval --torch-model` / `axsa finetune --torch-model` (bring
your own model, docs/models.md)."""

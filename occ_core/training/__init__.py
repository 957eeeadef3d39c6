"""Training: losses, the ``occ-train`` loop (single process and torchrun DDP) and ``occ-predict``."""

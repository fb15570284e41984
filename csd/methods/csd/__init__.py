"""CSD (cross-domain semantic decoupling, BMVC 2023): sampling, losses and the round-1 training."""

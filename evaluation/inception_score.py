"""Inception Score from logits (Salimans et al. 2016), split size 5000 as ADM."""

import numpy as np
import torch


def inception_score(logits: torch.Tensor, split_size: int = 5000) -> float:
    """mean over splits of exp(E_x KL(p(y|x) ‖ p(y)))."""
    probs = torch.softmax(logits.double(), dim=1).numpy()
    scores = []
    for start in range(0, len(probs), split_size):
        part = probs[start:start + split_size]
        marginal = part.mean(0, keepdims=True)
        kl = part * (np.log(part + 1e-30) - np.log(marginal + 1e-30))
        scores.append(np.exp(kl.sum(1).mean()))
    return float(np.mean(scores))

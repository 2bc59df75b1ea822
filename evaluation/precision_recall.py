"""Improved precision and recall (Kynkäänniemi et al. 2019), k = 3 nearest-neighbour manifolds, as ADM."""

import torch


def knn_radii(feats: torch.Tensor, k: int, batch: int = 2048) -> torch.Tensor:
    """Distance from each point to its k-th nearest neighbour in the same set (self excluded). -> (N,)"""
    radii = []
    for start in range(0, len(feats), batch):
        d = torch.cdist(feats[start:start + batch].double(), feats.double())  # (b, N)
        radii.append(d.kthvalue(k + 1, dim=1).values)  # k+1: the point itself is at distance 0
    return torch.cat(radii)


def coverage(queries: torch.Tensor, manifold: torch.Tensor, radii: torch.Tensor, batch: int = 2048) -> float:
    """Fraction of queries inside at least one ball B(manifold_i, radii_i)."""
    inside = []
    for start in range(0, len(queries), batch):
        d = torch.cdist(queries[start:start + batch].double(), manifold.double())  # (b, M)
        inside.append((d <= radii[None]).any(dim=1))
    return torch.cat(inside).double().mean().item()


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """precision = fake inside the real manifold; recall = real inside the fake manifold."""
    precision = coverage(fake, real, knn_radii(real, k))
    recall = coverage(real, fake, knn_radii(fake, k))
    return precision, recall

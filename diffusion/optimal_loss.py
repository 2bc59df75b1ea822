"""The irreducible denoising loss J*(σ) of a training set, estimated by Monte Carlo.

For the empirical training distribution {x⁽ⁿ⁾, n = 1..N} and x_σ = x0 + σ·ε (EDM's VE form), the ideal
denoiser is the posterior mean, a softmax-weighted mean of the training images (arXiv 2506.13763, §3):

    D*(x_σ) = Σ_n w_n x⁽ⁿ⁾,   w = softmax_n(−‖x_σ − x⁽ⁿ⁾‖² / (2σ²)),

and J*(σ) = E ‖x0 − D*(x_σ)‖² / d is the loss no network can go below (per element, the units of the
training loss before the λ(σ) weight). The exact sum is O(N) per query. As in the paper we use L ≪ N random
candidates besides the query's own source image; each candidate stands for (N−1)/L images, so its logit gets
+ln((N−1)/L) (the paper's constant down-weighting of the source, expressed the other way round). With L = N−1
the estimate is the exact empirical J*.

Closed-form check (tests): for Gaussian data N(0, s²I) the ideal denoiser is s²/(s²+σ²)·x_σ and
J*(σ) = s²σ²/(s² + σ²) per element.
"""

import json
import math
from pathlib import Path

import torch

from utils.atomic import atomic_write_text


@torch.no_grad()
def optimal_loss_at(data: torch.Tensor, sigma: float, num_queries: int, num_candidates: int,
                    generator: torch.Generator, chunk: int = 128) -> float:
    """J*(σ) per element for the empirical distribution of `data` (N, d) float. num_candidates ≥ N−1 = exact."""
    n, d = data.shape
    exact = num_candidates >= n - 1
    queries = torch.randint(n, (num_queries,), generator=generator)  # (M,) source image of each query
    total = 0.0
    for start in range(0, num_queries, chunk):
        src = queries[start:start + chunk]  # (m,)
        x0 = data[src]  # (m, d)
        eps = torch.randn(x0.shape, generator=generator, dtype=data.dtype)  # (m, d)
        x_sigma = x0 + sigma * eps  # (m, d)
        if exact:
            denoised = ideal_denoiser(x_sigma, data, sigma)  # every image, the source included
        else:
            cand = torch.randint(n, (num_candidates,), generator=generator)  # (L,) shared by the chunk
            denoised = subset_ideal_denoiser(x_sigma, data, src, cand, sigma, math.log((n - 1) / num_candidates))
        total += float((x0 - denoised).square().sum())
    return total / (num_queries * d)


def ideal_denoiser(x_sigma: torch.Tensor, data: torch.Tensor, sigma: float) -> torch.Tensor:
    """Exact D*(x_σ) over all of data (N, d): (m, d) -> (m, d)."""
    # −‖x_σ − x_n‖²/(2σ²) with ‖a − b‖² = ‖a‖² + ‖b‖² − 2a·b; the ‖x_σ‖² term cancels in the softmax
    logits = -(data.square().sum(1)[None] - 2 * x_sigma @ data.T) / (2 * sigma**2)  # (m, N)
    return logits.softmax(1) @ data  # (m, d)


def subset_ideal_denoiser(x_sigma: torch.Tensor, data: torch.Tensor, src: torch.Tensor, cand: torch.Tensor,
                          sigma: float, log_count: float) -> torch.Tensor:
    """D*(x_σ) estimated from each query's source image src (m,) and L random candidates cand (L,) shared by
    the chunk's queries, each standing for e^log_count images of the rest of the set. -> (m, d)"""
    cand_x = data[cand]  # (L, d)
    x0 = data[src]  # (m, d)
    # −‖x_σ − x‖²/(2σ²), with ‖a − b‖² = ‖a‖² + ‖b‖² − 2a·b (one matmul for the candidates)
    dist_cand = x_sigma.square().sum(1, keepdim=True) + cand_x.square().sum(1)[None] - 2 * x_sigma @ cand_x.T
    dist_src = (x_sigma - x0).square().sum(1, keepdim=True)  # (m, 1)
    logits = -torch.cat([dist_src, dist_cand.clamp_min(0)], 1) / (2 * sigma**2)  # (m, 1+L): the source first
    logits[:, 1:] += log_count
    logits[:, 1:] = logits[:, 1:].masked_fill(cand[None] == src[:, None], -math.inf)  # the source counted once
    weights = logits.softmax(1)  # (m, 1+L)
    return weights[:, :1] * x0 + weights[:, 1:] @ cand_x  # (m, d)


def optimal_loss_table(data: torch.Tensor, sigmas: torch.Tensor, num_queries: int = 512,
                       num_candidates: int = 8192, seed: int = 0) -> torch.Tensor:
    """J* at each σ of `sigmas` (S,) for data (N, ...) -> (S,) float64."""
    flat = data.reshape(len(data), -1).float()
    gen = torch.Generator().manual_seed(seed)
    return torch.tensor([optimal_loss_at(flat, float(s), num_queries, num_candidates, gen) for s in sigmas],
                        dtype=torch.float64)


def load_or_estimate(cache_file: Path, data_loader, sigmas: torch.Tensor, num_queries: int, num_candidates: int,
                     seed: int = 0) -> torch.Tensor:
    """J* on `sigmas` from `cache_file` when it holds these settings, else estimated from data_loader() and
    written there atomically. The file is small JSON: {"settings", "sigma", "optimal_loss"}."""
    settings = {"sigma": [round(float(s), 10) for s in sigmas], "num_queries": num_queries,
                "num_candidates": num_candidates, "seed": seed}
    if cache_file.exists():
        cached = json.loads(cache_file.read_text())
        if cached.get("settings") == settings:
            return torch.tensor(cached["optimal_loss"], dtype=torch.float64)
    table = optimal_loss_table(data_loader(), sigmas, num_queries, num_candidates, seed)
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(cache_file, json.dumps({"settings": settings, "sigma": settings["sigma"],
                                              "optimal_loss": table.tolist()}, indent=1) + "\n")
    return table

"""The latent autoencoder: a diffusers AutoencoderKL from a hub id or a local directory.

Latents are stored as posterior moments (mean, logvar: 2·C channels); a training sample is
z = (mean + exp(logvar/2)·ε)·scaling_factor, with the scaling factor read from the VAE config.
Pixel space is the identity "autoencoder" (no VAE).
"""

from pathlib import Path

import torch


def load_vae(name_or_path: str, device="cpu", dtype=torch.float32):
    """AutoencoderKL from a local directory (save_pretrained layout) or a hub id; one clear line when missing."""
    from diffusers import AutoencoderKL

    local = Path(name_or_path)
    try:
        vae = AutoencoderKL.from_pretrained(str(local) if local.exists() else name_or_path, torch_dtype=dtype)
    except (OSError, ValueError) as err:
        raise FileNotFoundError(f"VAE {name_or_path!r} could not be loaded (a directory saved with save_pretrained, "
                                f"or a hub id when online): {str(err).splitlines()[0]}") from None
    return vae.to(device).eval().requires_grad_(False)


def scaling_factor(vae) -> float:
    return float(vae.config.scaling_factor)


@torch.no_grad()
def encode_moments(vae, images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) in [-1, 1] -> (N, 2C, H/8, W/8) posterior moments [mean | logvar] (float32)."""
    posterior = vae.encode(images.to(vae.dtype)).latent_dist
    return torch.cat([posterior.mean, posterior.logvar], dim=1).float()


def sample_latents(moments: torch.Tensor, scale: float, generator=None, eps: torch.Tensor | None = None) -> torch.Tensor:
    """(N, 2C, h, w) moments -> (N, C, h, w) z = (mean + exp(logvar/2)·ε)·scale; ε given or drawn."""
    mean, logvar = moments.float().chunk(2, dim=1)
    if eps is None:
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    elif eps.shape != mean.shape:
        raise ValueError(f"latent ε of shape {tuple(eps.shape)} for moments' mean of shape {tuple(mean.shape)}")
    return (mean + torch.exp(0.5 * logvar) * eps) * scale


@torch.no_grad()
def decode_latents(vae, latents: torch.Tensor, scale: float) -> torch.Tensor:
    """(N, C, h, w) scaled latents -> (N, 3, H, W) images in [-1, 1] (float32)."""
    return vae.decode((latents / scale).to(vae.dtype)).sample.float().clamp(-1, 1)


class Decoder:
    """What a snapshot's "data" record says about decoding: identity in pixel space, the VAE in latent space."""

    def __init__(self, data_meta: dict, device):
        self.space = data_meta.get("space", "pixel")
        self.vae, self.scale = None, 1.0
        if self.space == "latent":
            self.vae = load_vae(data_meta["vae"], device)
            self.scale = float(data_meta["scaling_factor"])

    def __call__(self, samples: torch.Tensor) -> torch.Tensor:
        return samples if self.vae is None else decode_latents(self.vae, samples, self.scale)

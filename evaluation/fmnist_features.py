"""A feature network for Fashion-MNIST, where Inception features mean little and weights are offline.

A small CNN classifier is trained once on the train split (2 epochs, ~1 minute on 2 CPU cores) and cached.
Its 128-d penultimate activations give a Fréchet distance "FD_fmnist" (not FID: different features, not
comparable with published FIDs), its logits an "IS_fmnist", and for class-conditional samples the
classifier's accuracy on the requested labels ("class_accuracy") says how recognisable samples are.
"""

from pathlib import Path

import torch
from torch import nn

from dataio.training_data import pixel_images
from utils.atomic import atomic_torch_save
from utils.cache import cache_root

VERSION = 2


class FashionClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (16, 16, 16)
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (32, 8, 8)
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (64, 4, 4)
            nn.Flatten(), nn.Linear(64 * 16, 128), nn.ReLU(),
        )
        self.head = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.body(x)  # (N, 128)
        return feats, self.head(feats)  # (N, 128), (N, 10)


def cache_path() -> Path:
    return cache_root() / f"fmnist-classifier-v{VERSION}.pt"


def train_classifier(data_dir: str | None, epochs: int = 2, seed: int = 0) -> FashionClassifier:
    data = pixel_images("fashion_mnist", "train", data_dir)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = FashionClassifier()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(epochs):
        for idx in torch.randperm(len(data), generator=gen).split(128):
            _, logits = net(data.images[idx])
            loss = nn.functional.cross_entropy(logits, data.labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval().requires_grad_(False)


def load_or_train(data_dir: str | None = None) -> FashionClassifier:
    """The cached classifier, trained and saved (atomically) on first use."""
    path = cache_path()
    net = FashionClassifier()
    if path.is_file():
        net.load_state_dict(torch.load(path, map_location="cpu"))
        return net.eval().requires_grad_(False)
    net = train_classifier(data_dir)
    atomic_torch_save(net.state_dict(), path)
    return net


class FashionFeatures(nn.Module):
    name = "fmnist_classifier"
    dims = {"pool": 128, "logits": 10}
    predicts_dataset_labels = True  # its logits are the dataset's classes: class accuracy is meaningful

    def __init__(self, classifier: FashionClassifier):
        super().__init__()
        self.classifier = classifier

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """uint8 (N, 1, 32, 32) -> {"pool": (N, 128), "logits": (N, 10)}."""
        if images.shape[1] != 1 or images.shape[-1] != 32:
            raise ValueError(f"fmnist_classifier features need (N, 1, 32, 32) images, got {tuple(images.shape)}")
        x = images.float() / 127.5 - 1
        feats, logits = self.classifier(x)
        return {"pool": feats, "logits": logits}

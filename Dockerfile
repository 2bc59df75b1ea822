# Reproduction image: CUDA PyTorch base + the pinned requirements + the suite.
#   docker build -t maskdit-speed .
#   docker run --gpus all --ipc=host -v /data:/data -v $PWD/results:/workspace/results maskdit-speed \
#       accelerate launch --multi_gpu train.py --config configs/train/imagenet256-latent.yaml
# torch 2.11 pins triton==3.6.0 (no newer Triton installs beside it); the Triton 3.6 compile failure of the first
# GPU check is avoided at its root in diffusion/loss.py, and any scope that still fails to compile falls back
# (training/compile_scope.py).
FROM pytorch/pytorch:2.11.0-cuda12.8-cudnn9-runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    MASKDIT_CACHE=/workspace/.cache/maskdit \
    HF_HOME=/workspace/.cache/huggingface

WORKDIR /workspace

# torch/torchvision come with the base image; everything else exactly as pinned in requirements.txt.
COPY requirements.txt .
RUN grep -vE '^(torch|torchvision)==' requirements.txt > /tmp/requirements-image.txt \
    && pip install --no-cache-dir -r /tmp/requirements-image.txt \
    && rm /tmp/requirements-image.txt

COPY . .

# Non-root friendly: any UID can write run directories and caches under /workspace.
RUN mkdir -p results .cache && chmod -R a+rwX /workspace

CMD ["python", "train.py", "--help"]

"""Distributed data-parallel training entry point.

Run with ``torchrun``, one process per device::

    torchrun --standalone --nproc_per_node 2 -m analysis.swei_cnn.ddp \\
        --store session.zarr --window 33 --profile paper --out model.safetensors

CPU processes use the gloo backend, CUDA processes NCCL (``--device cuda``: process ``LOCAL_RANK``
uses GPU ``LOCAL_RANK``). Every process draws the same epoch (seeded) and trains on its share of
each batch; see :func:`analysis.swei_cnn.train.train`. Rank 0 writes the model, the checkpoint and
``--result-json``.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence

import torch

from analysis.swei_cnn.data import DEFAULT_ROI_PX
from analysis.swei_cnn.runners import run_train


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.swei_cnn.ddp",
                                     description="DDP training of the SWEI CNN (run via torchrun)")
    parser.add_argument("--store", required=True, help="session store with a displacement table")
    parser.add_argument("--window", type=int, required=True, help="window size in pixels")
    parser.add_argument("--profile", default="quick", choices=["paper", "quick"])
    parser.add_argument("--out", required=True, help="output .safetensors path")
    parser.add_argument("--split", default="positions", choices=["positions", "concentration"])
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--held-out-percent", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--roi", type=int, nargs=2, default=None, metavar=("DEPTH", "LATERAL"))
    parser.add_argument("--model-overrides", default=None,
                        help='JSON for SpatioTemporalDenseNet, e.g. \'{"growth_rate": 4}\'')
    parser.add_argument("--result-json", default=None, help="rank 0 writes the result here")
    args = parser.parse_args(argv)


    if "LOCAL_RANK" not in os.environ:
        parser.error("run this module with torchrun (LOCAL_RANK is not set)")
    local_rank = int(os.environ["LOCAL_RANK"])
    if args.device == "cuda":
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
        backend = "nccl"
    else:
        device = "cpu"
        backend = "gloo"
    torch.distributed.init_process_group(backend=backend)
    try:
        result = run_train(
            args.store, window_px=args.window, profile=args.profile, out_model_path=args.out,
            split=args.split, fold=args.fold, held_out_percent=args.held_out_percent,
            seed=args.seed, device=device,
            roi_px=tuple(args.roi) if args.roi else DEFAULT_ROI_PX,
            checkpoint_path=args.checkpoint, resume=args.resume, max_steps=args.max_steps,
            model_overrides=json.loads(args.model_overrides) if args.model_overrides else None,
        )
        if torch.distributed.get_rank() == 0 and args.result_json:
            with open(args.result_json, "w") as f:
                json.dump({**result, "world_size": torch.distributed.get_world_size()}, f)
    finally:
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

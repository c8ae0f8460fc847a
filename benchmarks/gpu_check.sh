#!/usr/bin/env bash
# The checks that need a CUDA GPU (CI has none), in one go:
#   1. the demo with precision auto (bfloat16 autocast on GPUs that have it), 2. float16 autocast
#   with a GradScaler, 3. a torchrun DDP run on the NCCL backend (one process per GPU), 4. speed and
#   memory of unet-resnet50, unet-vgg16 and unet-efficientnet_lite0 next to smp's Unet with the
#   same encoders, in float32 and bfloat16, inference (batch 8, 512x512) and training (batch 16,
#   256x256).
# usage: benchmarks/gpu_check.sh OUTDIR     (PYTHON=... to pick the interpreter; unetzoo importable)
set -uo pipefail
out=${1:-runs/gpu_check}
py=${PYTHON:-python3}
gpus=$($py -c "import torch; print(torch.cuda.device_count())")
if [ "$gpus" = 0 ]; then echo "gpu_check.sh: no CUDA GPU visible; run it on a machine with one" >&2; exit 2; fi
mkdir -p "$out"
export PYTHONUNBUFFERED=1
$py -c "import torch, timm; print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.get_device_name(0), 'timm', timm.__version__)" | tee "$out/versions.txt"
timed() { local name=$1; shift; local t0=$SECONDS; "$@" > "$out/$name.log" 2>&1; local rc=$?; echo "$name: exit $rc, $((SECONDS - t0)) s" | tee -a "$out/summary.txt"; tail -4 "$out/$name.log"; }
timed demo_auto $py -m unetzoo demo --no-progress -o "$out/demo_auto"
timed demo_fp16 $py -m unetzoo demo --no-progress -o "$out/demo_fp16" precision=fp16
timed ddp_nccl $py -m torch.distributed.run --nproc_per_node="$gpus" -m unetzoo train -c configs/nuclei_demo.yaml \
    -o "$out/ddp_nccl" epochs=4 eval_every=2 progress=false
timed bench $py -m unetzoo bench unet-resnet50 unet-vgg16 unet-efficientnet_lite0 --device cuda \
    --dtypes float32 bfloat16 --variants eager --batch 8 --size 512 --train-batch 16 --train-size 256 \
    --peak-max-n 8192 --compare-smp --smp-variants eager --repeats 10 --no-isolate --out "$out" --tag gpu_bench
# the GPU case: a bf16 channels-last training step of unet-resnet50, batch 16 at 512x512, against
# the GPU's own bf16 GEMM peak, with smp's Unet (same encoder, channels-last) beside it
timed bench_train_512 $py -m unetzoo bench unet-resnet50 --device cuda --modes train --dtypes bfloat16 \
    --train-variants cl --train-batch 16 --train-size 512 --peak-max-n 8192 --compare-smp --smp-variants cl \
    --repeats 20 --out "$out" --tag gpu_train_512

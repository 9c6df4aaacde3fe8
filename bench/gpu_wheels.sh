#!/usr/bin/env bash
# Fills .whl/ with the Python 3.12 wheels that bench/gpu_check.sh installs on a lent GPU
# machine: that machine reaches no package index and its image has torch but not MLflow or
# Optuna. pip resolves the whole closure of pyproject.toml's pins (torch left out: the card's
# own build is used) for CPython 3.12 on x86_64 Linux; the wheels of packages the image
# already holds are dropped, since carrying a second version of one stops the install there,
# and a lease carries at most 64 MiB.
#
#   bash bench/gpu_wheels.sh      # from anywhere; prints what it kept and its size
#
# Then carry `.whl` in the device call that runs bench/gpu_check.sh (it installs them first).
set -euo pipefail
cd "$(dirname "$0")/.."

# The GPU image's packages (the device library's KINDS.md, read 2026-11-17), normalised:
# lower case, '-' for '_' and '.'.
HAVE="absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs
botorch build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy
coverage cuda-bindings cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython
diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools formulaic
frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize
hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib
jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities linear-operator
lineax llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes
mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals networkx
ninja numba numba-cuda numpy numpyro nvidia-ml-py onnx onnx-ir onnxruntime onnxscript
opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging
pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client propcache protobuf
psutil pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions pytest
pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil
pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core
scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools
shellingham simplejson six sortedcontainers statsmodels sympy tabulate tensorboard
tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz
torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers
treescope triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug
wheel wrapt xarray xxhash yarl zipp"

# pyproject.toml's runtime pins (read with tomllib: Python 3.11+), torch left out: resolved
# for the card, it would bring a CUDA build of several GB that the image already holds.
mapfile -t PINS < <(python3 -c '
import tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
print("\n".join(dep for dep in deps if not dep.startswith("torch")))')
PLATFORMS=()
for n in 39 35 34 31 28 27 24 17 5; do PLATFORMS+=(--platform "manylinux_2_${n}_x86_64"); done
PLATFORMS+=(--platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any)

all=$(mktemp -d)
trap 'rm -rf "$all"' EXIT
python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PLATFORMS[@]}" -d "$all" "${PINS[@]}"
have=" $(echo $HAVE) "  # one line, each name between spaces
rm -rf .whl && mkdir .whl
for wheel in "$all"/*.whl; do
    name=$(basename "$wheel" | cut -d- -f1 | tr '[:upper:]_.' '[:lower:]--')
    case $have in
        *" $name "*) ;;  # on the image already
        *) mv "$wheel" .whl/ ;;
    esac
done
ls .whl
du -sh .whl

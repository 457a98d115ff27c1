# Sourced by smoke.sh and full.sh (from the repository root): the environment of a GPU session.
# The machine is a bare copy of the working tree with the image's python3 (torch and most
# packages installed, no network): genzoo and its plugins are imported from the tree, and the
# few packages the image lacks (submitit, for the local launcher) come as wheels in .whl/.
export PYTHONUNBUFFERED=1
export OUT="${OUT:-$PWD/out}"
export GENZOO_GPU_STATE="${GENZOO_GPU_STATE:-/tmp/genzoo_gpu}"   # kept between the calls of a warm machine
mkdir -p "$OUT" "$GENZOO_GPU_STATE"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
if ! python3 -c "import genzoo_plugins" 2>/dev/null; then   # not installed: plugins/ is genzoo_plugins
    mkdir -p /tmp/genzoo_path && ln -sfn "$PWD/plugins" /tmp/genzoo_path/genzoo_plugins
    export PYTHONPATH="$PWD:/tmp/genzoo_path${PYTHONPATH:+:$PYTHONPATH}"
fi
# The MNIST IDX files travel in data/mnist (an ignored folder, named in the call's carry).
export GENZOO_GPU_DATA="${GENZOO_GPU_DATA:-data/mnist}"

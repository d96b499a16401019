# shellcheck shell=bash
# Sourced by every recipe, never run on its own: the one place recipes start verl's trainer, so DRY_RUN, the
# config location and data preparation behave the same in every recipe.
#
# Knobs (environment variables):
#   PYTHON             interpreter that has verl and infopo-verl installed        (default: python3)
#   DRY_RUN=1          print the composed job config (Hydra --cfg job) and exit: no Ray, no GPU, no data, no key
#   INFOPO_CONFIG_DIR  where infopo_trainer.yaml lives; absolute or pkg://        (default: this checkout's
#                      hydra_configs/; pkg://infopo_verl.hydra_configs is the installed copy)

PYTHON=${PYTHON:-python3}

# Absolute, because Hydra resolves a relative --config-path against verl's main_ppo.py, not the caller's directory.
INFOPO_CONFIG_DIR=${INFOPO_CONFIG_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../hydra_configs" && pwd)}

infopo_is_dry_run() {
    [[ ${DRY_RUN:-0} != 0 ]]
}

# Print $1 as an absolute path: Ray workers do not necessarily share the caller's working directory.
infopo_abspath() {
    if [[ $1 == /* ]]; then echo "$1"; else echo "$PWD/$1"; fi
}

# infopo_prepare_data TASK OUT_DIR [PREPARE ARGS...]: write OUT_DIR/{train,test}.parquet with
# `infopo-verl prepare TASK` unless both exist. A dry run only composes the config, so it never writes data.
infopo_prepare_data() {
    local task=$1 out_dir=$2
    shift 2
    if infopo_is_dry_run || [[ -f $out_dir/train.parquet && -f $out_dir/test.parquet ]]; then
        return 0
    fi
    echo "[recipe] preparing the '$task' data in $out_dir" >&2
    # The module form, not the console script, so the data is written by the same interpreter that trains.
    "$PYTHON" -m infopo_verl.cli prepare "$task" --out "$out_dir" "$@"
}

# infopo_main_ppo OVERRIDES...: verl's own entry point on infopo_trainer.yaml; the last override wins.
infopo_main_ppo() {
    local print_config=()
    if infopo_is_dry_run; then
        print_config=(--cfg job)
    fi
    exec "$PYTHON" -m verl.trainer.main_ppo \
        --config-path="$INFOPO_CONFIG_DIR" \
        --config-name=infopo_trainer \
        "${print_config[@]}" \
        "$@"
}

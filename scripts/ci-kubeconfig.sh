# Sourced, never run, by scripts/ci-post-deploy and scripts/ci-scheduled-probe (after their
# `cd` to the repository): a kubeconfig held in a secret comes in as
# $UNIBAZZAR_KUBECONFIG_DATA, as the environment file's [kubernetes] mode = "kubeconfig"
# needs it, and is written to a private file (mode 0600, under $RUNNER_TEMP, which GitHub
# empties after the job) that KUBECONFIG names and that is removed when the script exits.
# A KUBECONFIG already set wins. Never printed; never `set -x` here: it is the secret.
if [ -n "${UNIBAZZAR_KUBECONFIG_DATA:-}" ] && [ -z "${KUBECONFIG:-}" ]; then
  KUBECONFIG=$(mktemp "${RUNNER_TEMP:-${TMPDIR:-/tmp}}/kubeconfig.XXXXXX")  # mode 0600
  # shellcheck disable=SC2064  # the path is fixed now, on purpose
  trap "rm -f '$KUBECONFIG'" EXIT
  printf '%s\n' "$UNIBAZZAR_KUBECONFIG_DATA" > "$KUBECONFIG"
  export KUBECONFIG
fi

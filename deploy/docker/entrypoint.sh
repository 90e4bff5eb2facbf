#!/bin/sh
# The image's entrypoint: the checks installed in the image, run by pytest in the run mode
# UNIBAZZAR_RUN_MODE names (default scheduled). Settings come from environment variables, so
# a CronJob, `docker run -e` and a systemd unit set them alike; arguments go on to pytest
# (e.g. -m order-service). Outside a container it works the same with the package installed
# (tests/test_container.py runs it so).
#
#   UNIBAZZAR_ENV_FILE         the environment file (read by the plugin itself)
#   UNIBAZZAR_RUN_MODE         oncall | scheduled | ci (default scheduled)
#   UNIBAZZAR_REPORTS_DIR      where summary.json and incident.md go (default ./reports)
#   UNIBAZZAR_FAIL_ON          SEV1..SEV4 | any | never (default: the run mode's)
#   UNIBAZZAR_METRICS_FILE     write Prometheus metrics to this file (textfile collector)
#   UNIBAZZAR_PUSHGATEWAY_URL  push Prometheus metrics to this Pushgateway
#
# Exit status: the run's (plugins/unibazzar_health/reports/gate.py): 0 healthy, 1 a verdict at or
# above the --fail-on threshold, 6 incomplete, 4 a bad environment file or option.
# Never `set -x` here: the environment holds secrets.
set -eu

set -- "--run-mode=${UNIBAZZAR_RUN_MODE:-scheduled}" "$@"
if [ -n "${UNIBAZZAR_REPORTS_DIR:-}" ]; then
  set -- "--reports-dir=${UNIBAZZAR_REPORTS_DIR}" "$@"
fi
if [ -n "${UNIBAZZAR_FAIL_ON:-}" ]; then
  set -- "--fail-on=${UNIBAZZAR_FAIL_ON}" "$@"
fi
if [ -n "${UNIBAZZAR_METRICS_FILE:-}" ]; then
  set -- "--metrics-file=${UNIBAZZAR_METRICS_FILE}" "$@"
fi
if [ -n "${UNIBAZZAR_PUSHGATEWAY_URL:-}" ]; then
  set -- "--pushgateway=${UNIBAZZAR_PUSHGATEWAY_URL}" "$@"
fi
exec unibazzar-health run "$@"

"""The checks run: load the UniBazzar health plugin (options, markers, verdict). Installed,
the plugin loads through its pytest11 entry point and this names it again, a no-op; it
matters where plugin autoloading is off (PYTEST_DISABLE_PLUGIN_AUTOLOAD)."""

pytest_plugins = ["unibazzar_health.plugin"]

//! Reading the configuration again on SIGHUP: the same command line and config file as at
//! start, and which of the changed settings only a restart applies.

use super::{parse, Command, Config, ConfigError, Env};

/// What the configuration was read from: the command line (flags still win over the file)
/// and the environment.
#[derive(Clone)]
pub struct Rereader {
    args: Vec<String>,
    env: Env,
}

impl Rereader {
    pub fn new(args: Vec<String>, env: Env) -> Rereader {
        Rereader { args, env }
    }

    /// The configuration as the daemon would start with it now, checked the same way.
    pub fn read(&self) -> Result<Config, ConfigError> {
        match parse(&self.args, &self.env)? {
            Command::Run(cfg) => Ok(cfg),
            // Not with the command line the daemon started from, which was a `run`.
            _ => Err(ConfigError::NotARun),
        }
    }
}

/// The settings whose new value a reload does not apply, by their key, when `new` differs
/// from `old`: what the listeners, the privileges, the runtime, the engine and the connections
/// were set up with at start. A reload applies the models (the directory's files and each
/// model's settings, the daemon's model keys included) and nothing else.
pub fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    macro_rules! compare {
        ($($field:ident => $key:literal),* $(,)?) => {
            $(if format!("{:?}", old.$field) != format!("{:?}", new.$field) {
                changed.push($key);
            })*
        };
    }
    compare!(
        model => "model",
        model_name => "model-name",
        max_loaded_models => "max-loaded-models",
        keep_alive => "keep-alive",
        runtime_library => "runtime-library",
        socket => "socket",
        socket_mode => "socket-mode",
        socket_group => "socket-group",
        allow_uid => "allow-uid",
        allow_gid => "allow-gid",
        user => "user",
        tcp => "tcp",
        max_connections => "max-connections",
        max_body_bytes => "max-body-bytes",
        output_cap_bytes => "output-cap-bytes",
        header_timeout => "header-timeout",
        keepalive_timeout => "keepalive-timeout",
        write_timeout => "write-timeout",
        queue_size => "queue-size",
        queue_timeout => "queue-timeout",
        request_timeout => "request-timeout",
        shutdown_timeout => "shutdown-timeout",
        drain_timeout => "drain-timeout",
        abort_grace => "abort-grace",
        npu_lock => "npu-lock",
        enabled_cpus => "enabled-cpus",
        notify_fd => "notify-fd",
        syslog => "syslog",
        log_level => "log-level",
        kv_cache_reuse => "kv-cache-reuse",
        kv_snapshot_dir => "kv-snapshot-dir",
        kv_snapshot_limit => "kv-snapshot-limit",
        tools_budget_percent => "tools-budget",
        embedding_pooling => "embedding-pooling",
        background => "background",
        background_hold => "background-hold",
        think_default => "think-default",
    );
    // The key itself never appears in `Debug`.
    let key = |c: &Config| c.api_key.as_ref().map(|k| k.as_bytes().to_vec());
    if key(old) != key(new) {
        changed.push("api-key");
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_settings_a_reload_does_not_apply_are_named() {
        let old = Config::default();
        let mut new = Config {
            max_context_len: 2048,
            ..Config::default()
        };
        new.sampling.top_k = 9;
        assert!(
            needs_restart(&old, &new).is_empty(),
            "applied by the reload"
        );
        new.socket = "/tmp/other.sock".into();
        new.queue_size = 3;
        new.api_key = super::super::ApiKey::new("k".into());
        assert_eq!(
            needs_restart(&old, &new),
            ["socket", "queue-size", "api-key"]
        );
    }
}

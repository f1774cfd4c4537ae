//! `watchdog alert test`: a clearly marked test alert to every sink (or one).

use std::{path::PathBuf, process::ExitCode};

use crate::{
    config::Config,
    sinks::alerts::{resolve, send_test},
    sources::kernel::procfs,
};

/// `watchdog alert test`: exit 0 all delivered, 1 some failed, 2 configuration error.
pub fn test(config: Option<PathBuf>, only: Option<String>) -> ExitCode {
    let prepare = || -> anyhow::Result<_> {
        let config = Config::load(config.as_deref())?;
        let mut sinks = resolve(&config.alerts)?;
        if let Some(name) = &only {
            let names: Vec<String> = sinks.iter().map(|s| s.name.clone()).collect();
            sinks.retain(|s| &s.name == name);
            if sinks.is_empty() {
                anyhow::bail!(
                    "--sink {name}: no such sink; configured: {}",
                    if names.is_empty() {
                        "none (add [[alerts.sinks]] to the config)".to_owned()
                    } else {
                        names.join(", ")
                    }
                );
            }
        } else if sinks.is_empty() {
            anyhow::bail!("no alert sinks configured; add [[alerts.sinks]] to the config");
        }
        Ok((config, sinks))
    };
    let (config, sinks) = match prepare() {
        Ok(ready) => ready,
        Err(err) => {
            eprintln!("error: {err:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match super::runtime() {
        Ok(runtime) => runtime,
        Err(err) => return super::fail(&err, 2),
    };
    let node = procfs::node_name();
    let results = runtime.block_on(send_test(
        &config.alerts,
        sinks,
        config.generator_url(),
        &node,
    ));
    let mut all_ok = true;
    for (spec, delivery) in results {
        let attempts = match delivery.attempts {
            1 => "1 attempt".to_owned(),
            n => format!("{n} attempts"),
        };
        match delivery.result {
            Ok(()) => println!(
                "{}: delivered ({} {}, {attempts})",
                spec.name,
                spec.kind.as_str(),
                spec.endpoint.redacted
            ),
            Err(why) => {
                all_ok = false;
                println!(
                    "{}: FAILED ({} {}, {attempts}): {why}",
                    spec.name,
                    spec.kind.as_str(),
                    spec.endpoint.redacted
                );
            }
        }
    }
    if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

//! `subledger serve --config FILE`: every serve option from a TOML file, as the defaults under
//! the environment and the flags. Precedence, highest first: a flag, its SUBLEDGER_* (or
//! DATABASE_URL) environment variable, the file, the built-in default.
//!
//! The file's keys are the flags' long names (`listen = "0.0.0.0:50051"`, `max-connections = 32`,
//! `allow-anonymous = true`). Nothing here lists them: each key becomes the clap default of the
//! argument of that long name, so a flag added to `ServeArgs` is a key of the file at once, and
//! clap's own precedence (flag, then env, then default) gives the order above. A key that no
//! serve flag has is refused, so a misspelt option is never silently ignored.
//! deploy/subledger.toml is the commented example; tests/config.rs holds it to `serve --help`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Command, CommandFactory, FromArgMatches};

/// The subcommand the file configures.
const SUBCOMMAND: &str = "serve";
/// The flag and the environment variable that name the file.
const CONFIG_FLAG: &str = "--config";
pub const CONFIG_ENV: &str = "SUBLEDGER_CONFIG";
/// Past this a "configuration file" is something else (a wrong path): refused, not parsed.
const CONFIG_BYTES_MAX: u64 = 1 << 20;

/// Parses the command line as `P::parse()` does, with the defaults of `serve` taken from the
/// configuration file if one is named; exits (status 2) on a usage or configuration error.
pub fn parse<P: CommandFactory + FromArgMatches>() -> P {
    let args: Vec<OsString> = std::env::args_os().collect();
    let mut command = P::command();
    if let Some(path) = config_path(&args) {
        command = match with_file_defaults(command, &path) {
            Ok(command) => command,
            Err(error) => {
                eprintln!("subledger: error: --config {}: {error:#}", path.display());
                std::process::exit(2);
            }
        };
    }
    let mut matches = command
        .try_get_matches_from_mut(args)
        .unwrap_or_else(|error| error.exit());
    P::from_arg_matches_mut(&mut matches).unwrap_or_else(|error| error.format(&mut command).exit())
}

/// The file named by `serve ... --config FILE` (or `--config=FILE`), else by SUBLEDGER_CONFIG,
/// when the command is `serve`.
fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let serve_at = args.iter().position(|arg| arg == SUBCOMMAND)?;
    let after = &args[serve_at + 1..];
    for (i, arg) in after.iter().enumerate() {
        let text = arg.to_string_lossy();
        if text == CONFIG_FLAG {
            return after.get(i + 1).map(PathBuf::from);
        }
        if let Some(path) = text.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
    }
    std::env::var_os(CONFIG_ENV).map(PathBuf::from)
}

/// `command` with each key of the file as the default of the serve flag of that long name (or
/// of a global flag such as `log-format`).
fn with_file_defaults(command: Command, path: &Path) -> anyhow::Result<Command> {
    let table = read_table(path)?;
    let mut command = command;
    for (key, value) in table {
        let values = values_of(&key, &value)?;
        let serve = command
            .find_subcommand(SUBCOMMAND)
            .expect("serve is a subcommand");
        let (global, id) = if let Some(arg) = long_arg(serve, &key) {
            (false, arg.get_id().clone())
        } else if let Some(arg) = long_arg(&command, &key) {
            (true, arg.get_id().clone())
        } else {
            bail!("{key:?} is not an option of `subledger serve` (see `subledger serve --help`)");
        };
        if key == "config" {
            bail!("\"config\" cannot name another file");
        }
        // Parsed once per process: a leaked string is what clap's 'static defaults take.
        let values: Vec<&'static str> = values
            .into_iter()
            .map(|value| &*Box::leak(value.into_boxed_str()))
            .collect();
        let set_default = move |arg: clap::Arg| arg.default_values(values);
        command = if global {
            command.mut_arg(id, set_default)
        } else {
            command.mut_subcommand(SUBCOMMAND, |serve| serve.mut_arg(id, set_default))
        };
    }
    Ok(command)
}

fn long_arg<'c>(command: &'c Command, long: &str) -> Option<&'c clap::Arg> {
    command
        .get_arguments()
        .find(|arg| arg.get_long() == Some(long))
}

fn read_table(path: &Path) -> anyhow::Result<toml::Table> {
    let size = std::fs::metadata(path).context("cannot read it")?.len();
    if size > CONFIG_BYTES_MAX {
        bail!("{size} bytes, more than a configuration file's {CONFIG_BYTES_MAX}");
    }
    let text = std::fs::read_to_string(path).context("cannot read it")?;
    toml::from_str(&text).context("not TOML")
}

/// A TOML value as the command line would spell it.
fn values_of(key: &str, value: &toml::Value) -> anyhow::Result<Vec<String>> {
    use toml::Value as V;
    Ok(match value {
        V::String(text) => vec![text.clone()],
        V::Integer(number) => vec![number.to_string()],
        V::Float(number) => vec![number.to_string()],
        V::Boolean(flag) => vec![flag.to_string()],
        V::Array(items) => items
            .iter()
            .map(|item| match item {
                V::Array(_) | V::Table(_) => bail!("{key:?}: a list of lists or tables"),
                item => Ok(values_of(key, item)?.remove(0)),
            })
            .collect::<anyhow::Result<_>>()?,
        V::Table(_) => bail!("{key:?} is a table; options are top-level keys"),
        V::Datetime(_) => bail!("{key:?}: a date, where no option takes one"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_file_is_named_after_serve() {
        assert_eq!(
            config_path(&os(&["subledger", "serve", "--config", "a.toml"])),
            Some(PathBuf::from("a.toml"))
        );
        assert_eq!(
            config_path(&os(&[
                "subledger",
                "serve",
                "--listen",
                "x",
                "--config=b.toml"
            ])),
            Some(PathBuf::from("b.toml"))
        );
    }

    #[test]
    fn values_are_spelt_as_on_the_command_line() {
        let table: toml::Table =
            toml::from_str("a = 3\nb = true\nc = \"10s\"\nd = [\"x\", \"y\"]").unwrap();
        assert_eq!(values_of("a", &table["a"]).unwrap(), ["3"]);
        assert_eq!(values_of("b", &table["b"]).unwrap(), ["true"]);
        assert_eq!(values_of("c", &table["c"]).unwrap(), ["10s"]);
        assert_eq!(values_of("d", &table["d"]).unwrap(), ["x", "y"]);
    }
}

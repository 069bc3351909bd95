//! `local-client keys …`: keys the server holds and signs with.

use std::{io::Write, path::PathBuf};

use anyhow::Context;
use clap::Subcommand;
use keyserver_protocol::{
    KeyName,
    limits::MAX_SIGN_MESSAGE,
    ops::KeyInfo,
    signing::{Algorithm, MessageHash, PRIVATE_KEY_LEN, PrivateKey, SignOptions},
};
use local_client::ClientError;
use zeroize::Zeroizing;

use crate::{
    Account, Cli, Failure, Passwords, hex, login, read_bounded, rfc3339, usage, user_name,
};

#[derive(Debug, Subcommand)]
pub(crate) enum KeysCmd {
    /// Have the server make a key pair and hold its private key; prints the public key.
    Generate {
        /// The account's user name [env: KEYSERVER_USER].
        #[arg(long, env = "KEYSERVER_USER")]
        user: String,
        /// The key's name.
        #[arg(long)]
        name: String,
        /// ed25519 or secp256k1.
        #[arg(long)]
        algorithm: Algorithm,
        /// Allow `keys export` of the private key later (fixed for the key's life).
        #[arg(long)]
        exportable: bool,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Give the server a private key to hold (the raw 32 bytes); prints the public key.
    Import {
        /// The account's user name [env: KEYSERVER_USER].
        #[arg(long, env = "KEYSERVER_USER")]
        user: String,
        /// The key's name.
        #[arg(long)]
        name: String,
        /// ed25519 or secp256k1.
        #[arg(long)]
        algorithm: Algorithm,
        /// File holding the raw 32-byte private key; `-` for stdin.
        #[arg(long)]
        file: PathBuf,
        /// Allow `keys export` of it later.
        #[arg(long)]
        exportable: bool,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Have the server sign a file's bytes with a key it holds; prints the signature (hex).
    Sign {
        /// The account's user name [env: KEYSERVER_USER].
        #[arg(long, env = "KEYSERVER_USER")]
        user: String,
        /// The key's name.
        #[arg(long)]
        name: String,
        /// The message; `-` for stdin (at most 64 KiB).
        #[arg(long)]
        file: PathBuf,
        /// secp256k1 only: sha256 (default), keccak256 (Ethereum), or none (the file is
        /// the 32-byte digest).
        #[arg(long)]
        hash: Option<MessageHash>,
        /// secp256k1 only: append the recovery id v (0 or 1).
        #[arg(long)]
        recoverable: bool,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Print a key's public key (hex).
    Public {
        /// The account's user name [env: KEYSERVER_USER].
        #[arg(long, env = "KEYSERVER_USER")]
        user: String,
        /// The key's name.
        #[arg(long)]
        name: String,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// List the keys the server holds for the account, with their signature counts.
    List {
        /// The account's user name [env: KEYSERVER_USER].
        #[arg(long, env = "KEYSERVER_USER")]
        user: String,
        /// Print one JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Write the raw 32-byte private key of a key made --exportable to stdout (proves the
    /// password again first).
    Export {
        /// The account's user name [env: KEYSERVER_USER].
        #[arg(long, env = "KEYSERVER_USER")]
        user: String,
        /// The key's name.
        #[arg(long)]
        name: String,
    },
    /// Delete a key the server holds (proves the password again first; a key that was not
    /// exportable is gone for good).
    Delete {
        /// The account's user name [env: KEYSERVER_USER].
        #[arg(long, env = "KEYSERVER_USER")]
        user: String,
        /// The key's name.
        #[arg(long)]
        name: String,
    },
}

impl KeysCmd {
    fn user(&self) -> &str {
        match self {
            Self::Generate { user, .. }
            | Self::Import { user, .. }
            | Self::Sign { user, .. }
            | Self::Public { user, .. }
            | Self::List { user, .. }
            | Self::Export { user, .. }
            | Self::Delete { user, .. } => user,
        }
    }

    /// The key it names (all but `list` name one).
    fn name(&self) -> Option<&str> {
        match self {
            Self::Generate { name, .. }
            | Self::Import { name, .. }
            | Self::Sign { name, .. }
            | Self::Public { name, .. }
            | Self::Export { name, .. }
            | Self::Delete { name, .. } => Some(name),
            Self::List { .. } => None,
        }
    }

    /// Whether the command reads stdin for its input (then the password cannot come from it).
    pub(crate) fn reads_stdin(&self) -> bool {
        match self {
            Self::Import { file, .. } | Self::Sign { file, .. } => file.as_os_str() == "-",
            _ => false,
        }
    }
}

fn key_name(s: &str) -> Result<KeyName, Failure> {
    KeyName::new(s).map_err(|e| usage(format!("invalid key name: {e}")))
}

/// A key command's failure: "no such key" rather than "no such secret", and so on.
fn failure(e: ClientError, name: &KeyName) -> Failure {
    match e {
        ClientError::NotFound => Failure {
            code: 4,
            message: format!("no such key: {name}"),
        },
        ClientError::NameExists => Failure {
            code: 7,
            message: format!("a key named {name} already exists"),
        },
        other => other.into(),
    }
}

fn info_json(k: &KeyInfo) -> serde_json::Value {
    serde_json::json!({
        "name": k.name.as_str(),
        "algorithm": k.algorithm.as_str(),
        "public_key": hex(k.public_key.as_slice()),
        "exportable": k.exportable,
        "created": rfc3339(k.created),
        "signatures": k.signatures,
    })
}

fn print_key(out: &mut impl Write, k: &KeyInfo, json: bool) -> Result<(), Failure> {
    if json {
        writeln!(out, "{}", info_json(k))
    } else {
        writeln!(out, "{}", hex(k.public_key.as_slice()))
    }
    .context("cannot write to stdout")?;
    Ok(())
}

/// Runs `command` in a session of its user, then checks the account's recent events and
/// logs out as every command does; what it printed is kept only if all of that passed.
pub(crate) async fn run(
    cli: &Cli,
    pw: &Passwords,
    command: &KeysCmd,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let user = user_name(command.user())?;
    // Checked before anything connects.
    command.name().map(key_name).transpose()?;
    // Input is read (and checked) before anything connects.
    let input = match command {
        KeysCmd::Import {
            file, algorithm, ..
        } => {
            let bytes = read_bounded(file, PRIVATE_KEY_LEN, "the key file")?;
            let key = PrivateKey::from_bytes(*algorithm, &bytes)
                .map_err(|e| usage(format!("bad key file {}: {e}", file.display())))?;
            Input::Key(key)
        }
        KeysCmd::Sign { file, .. } => {
            Input::Message(read_bounded(file, MAX_SIGN_MESSAGE, "the message")?)
        }
        _ => Input::None,
    };
    let account = login(cli, pw, &user).await?;
    let r = run_in(&account, command, input).await;
    let checked = account.finish().await;
    // Nothing is printed unless every check passed.
    let output = r?;
    checked?;
    match output {
        Output::Key(k, json) => print_key(out, &k, json)?,
        Output::Signature(s, json) => {
            if json {
                let mut v = info_json(&s.key);
                v["signature"] = hex(s.signature.as_slice()).into();
                writeln!(out, "{v}")
            } else {
                writeln!(out, "{}", hex(s.signature.as_slice()))
            }
            .context("cannot write to stdout")?;
        }
        Output::List(keys, json) => {
            if json {
                let v: Vec<_> = keys.iter().map(info_json).collect();
                writeln!(out, "{}", serde_json::Value::Array(v))
            } else {
                keys.iter().try_for_each(|k| {
                    writeln!(
                        out,
                        "{}\t{}\t{}\t{}\t{} signature(s)\t{}",
                        k.name,
                        k.algorithm,
                        hex(k.public_key.as_slice()),
                        if k.exportable {
                            "exportable"
                        } else {
                            "not exportable"
                        },
                        k.signatures,
                        rfc3339(k.created)
                    )
                })
            }
            .context("cannot write to stdout")?;
        }
        Output::Private(key) => {
            out.write_all(key.expose_secret())
                .and_then(|()| out.flush())
                .context("cannot write to stdout")?;
        }
        Output::Said(what) => eprintln!("{what}"),
    }
    Ok(())
}

enum Input {
    None,
    Key(PrivateKey),
    Message(Zeroizing<Vec<u8>>),
}

enum Output {
    Key(KeyInfo, bool),
    Signature(keyserver_protocol::ops::KeySignature, bool),
    List(Vec<KeyInfo>, bool),
    Private(PrivateKey),
    Said(String),
}

async fn run_in(account: &Account, command: &KeysCmd, input: Input) -> Result<Output, Failure> {
    let session = &account.session;
    if let KeysCmd::List { json, .. } = command {
        let keys = session.list_keys().await.map_err(Failure::from)?;
        return Ok(Output::List(keys, *json));
    }
    let name = &key_name(command.name().unwrap_or_default())?;
    let fail = |e| failure(e, name);
    Ok(match (command, input) {
        (
            KeysCmd::Generate {
                algorithm,
                exportable,
                json,
                ..
            },
            _,
        ) => Output::Key(
            session
                .generate_key(name, *algorithm, *exportable)
                .await
                .map_err(fail)?,
            *json,
        ),
        (
            KeysCmd::Import {
                exportable, json, ..
            },
            Input::Key(key),
        ) => Output::Key(
            session
                .import_key(name, &key, *exportable)
                .await
                .map_err(fail)?,
            *json,
        ),
        (
            KeysCmd::Sign {
                hash,
                recoverable,
                json,
                ..
            },
            Input::Message(message),
        ) => {
            let options = SignOptions {
                hash: *hash,
                recoverable: *recoverable,
            };
            Output::Signature(
                session.sign(name, &message, options).await.map_err(fail)?,
                *json,
            )
        }
        (KeysCmd::Public { json, .. }, _) => {
            Output::Key(session.key(name).await.map_err(fail)?, *json)
        }
        (KeysCmd::Export { .. }, _) => Output::Private(
            session
                .export_key(name, &account.password)
                .await
                .map_err(fail)?,
        ),
        (KeysCmd::Delete { .. }, _) => {
            session
                .delete_key(name, &account.password)
                .await
                .map_err(fail)?;
            Output::Said(format!("deleted key {name}"))
        }
        (KeysCmd::Import { .. } | KeysCmd::Sign { .. } | KeysCmd::List { .. }, _) => {
            unreachable!("their input is read before; a list is answered above")
        }
    })
}

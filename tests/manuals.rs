//! `relaybox completions SHELL` and `relaybox manpage DIR`, as the .deb ships them: bash
//! really completes with the generated script, man renders every page without a warning
//! (the check lintian makes), and bad arguments get specific errors.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output, Stdio};

use clap::CommandFactory;

const BIN: &str = env!("CARGO_BIN_EXE_relaybox");

fn relaybox(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("RELAYBOX_CONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout.clone()).unwrap()
}

/// What bash offers after `line` (the word being completed is the last one), using the
/// script `relaybox completions bash` prints.
fn bash_completes(script: &Path, line: &str) -> Vec<String> {
    let words: Vec<&str> = line.split(' ').collect();
    let program = format!(
        "source {script}; COMP_WORDS=({words}); COMP_CWORD={cword}; COMP_LINE='{line}'; \
         COMP_POINT={point}; _relaybox relaybox '{cur}' '{prev}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script = script.display(),
        words = words
            .iter()
            .map(|w| format!("'{w}'"))
            .collect::<Vec<_>>()
            .join(" "),
        cword = words.len() - 1,
        point = line.len(),
        cur = words[words.len() - 1],
        prev = words[words.len() - 2],
    );
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &program])
        .output()
        .expect("bash is needed for this test");
    stdout(&out)
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn bash_completes_subcommands_nested_subcommands_and_flags_with_the_generated_script() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("relaybox.bash");
    std::fs::write(&script, stdout(&relaybox(&["completions", "bash"]))).unwrap();

    assert_eq!(bash_completes(&script, "relaybox cl"), ["client"]);
    let check = bash_completes(&script, "relaybox ch");
    assert_eq!(check, ["check-config"]);
    let sends = bash_completes(&script, "relaybox client se");
    assert!(sends.contains(&"send".to_owned()), "{sends:?}");
    let flags = bash_completes(&script, "relaybox serve --li");
    assert!(
        flags.contains(&"--listen-tcp".to_owned()) && flags.contains(&"--listen-http".to_owned()),
        "{flags:?}"
    );
    let shells = bash_completes(&script, "relaybox completions ");
    for shell in ["bash", "zsh", "fish"] {
        assert!(shells.contains(&shell.to_owned()), "{shells:?}");
    }
}

#[test]
fn zsh_and_fish_scripts_define_the_completion_and_name_every_subcommand() {
    let zsh = stdout(&relaybox(&["completions", "zsh"]));
    let fish = stdout(&relaybox(&["completions", "fish"]));
    assert!(zsh.starts_with("#compdef relaybox"), "{}", &zsh[..80]);
    assert!(fish.contains("complete -c relaybox"));
    for sub in relaybox::cli::Cli::command().get_subcommands() {
        let name = sub.get_name();
        assert!(zsh.contains(&format!("'{name}:")), "zsh lacks {name}");
        assert!(
            fish.contains(&format!("-a \"{name}\"")),
            "fish lacks {name}"
        );
    }
}

#[test]
fn an_unknown_shell_is_refused_with_the_shells_that_exist_and_exit_code_2() {
    let out = relaybox(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid value 'tcsh'"), "{err}");
    assert!(
        err.contains("bash") && err.contains("zsh") && err.contains("fish"),
        "{err}"
    );
}

/// Every command's name as its page is named: `relaybox`, `relaybox-client`, …
fn page_names(cmd: &clap::Command, name: &str, names: &mut Vec<String>) {
    names.push(name.to_owned());
    for sub in cmd.get_subcommands() {
        if !sub.is_hide_set() && sub.get_name() != "help" {
            page_names(sub, &format!("{name}-{}", sub.get_name()), names);
        }
    }
}

#[test]
fn manpage_writes_one_page_per_command_and_man_renders_each_without_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let man_dir = dir.path().join("man1");
    let out = relaybox(&["manpage", man_dir.to_str().unwrap()]);
    let said = stdout(&out);

    let mut expected = Vec::new();
    page_names(&relaybox::cli::Cli::command(), "relaybox", &mut expected);
    let mut written: Vec<String> = std::fs::read_dir(&man_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    written.sort();
    let mut expected_files: Vec<String> = expected.iter().map(|n| format!("{n}.1")).collect();
    expected_files.sort();
    assert_eq!(written, expected_files);
    assert!(said.contains(&format!("wrote {} man pages", expected.len())));
    assert!(written.contains(&"relaybox-client-send.1".to_owned()));

    for page in &written {
        // What lintian runs for its manpage-has-errors-from-man check.
        let rendered = Command::new("man")
            .args(["--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z"])
            .arg(man_dir.join(page))
            .env("MANWIDTH", "80")
            .output()
            .expect("man (man-db) is needed for this test");
        let warnings = String::from_utf8_lossy(&rendered.stderr);
        assert!(
            rendered.status.success() && warnings.trim().is_empty(),
            "{page}: {warnings}"
        );
    }
    let send = std::fs::read_to_string(man_dir.join("relaybox-client-send.1")).unwrap();
    assert!(send.contains(".TH relaybox-client-send 1"), "{send}");
    assert!(send.contains("image"), "the page documents --image: {send}");
}

#[test]
fn manpage_into_a_file_is_refused_with_a_specific_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let out = relaybox(&["manpage", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("exists and is not a directory"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "x");
}

//! Manual pages and shell completions generated from a program's clap definition, so
//! `--help`, `man sluicectl-backend` and tab completion say the same thing. The Debian
//! package (scripts/build-deb.sh) writes them with each program's hidden `manual` verb.

use clap::Command;
use std::path::Path;

/// Writes `NAME.1` for `cmd` and `NAME-VERB.1` (and deeper: `sluicectl-backend-add.1`) for
/// each subcommand, as `git` does; returns the files written.
pub fn write_man_pages(cmd: Command, dir: &Path) -> Result<Vec<String>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut cmd = cmd;
    cmd.build();
    let mut written = Vec::new();
    write_page(&cmd, cmd.get_name().to_string(), dir, &mut written)?;
    Ok(written)
}

fn write_page(
    cmd: &Command,
    name: String,
    dir: &Path,
    written: &mut Vec<String>,
) -> Result<(), String> {
    if cmd.is_hide_set() || name.ends_with("-help") {
        return Ok(());
    }
    // The page's title is its file name, and its usage line the full command.
    let page = cmd
        .clone()
        .name(name.clone())
        .bin_name(name.replace('-', " "));
    let mut out = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut out)
        .map_err(|e| format!("cannot render the manual page {name}: {e}"))?;
    let file = dir.join(format!("{name}.1"));
    std::fs::write(&file, out).map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    written.push(file.display().to_string());
    for sub in cmd.get_subcommands() {
        write_page(sub, format!("{name}-{}", sub.get_name()), dir, written)?;
    }
    Ok(())
}

/// [`write_man_pages`], saying on standard output how many it wrote where (the programs'
/// hidden `manual` verb).
pub fn write_man_pages_and_say(cmd: Command, dir: &Path) -> Result<(), String> {
    let files = write_man_pages(cmd, dir)?;
    println!("{} manual page(s) in {}", files.len(), dir.display());
    Ok(())
}

/// The completion script for `shell`, on standard output.
pub fn print_completions(shell: clap_complete::Shell, mut cmd: Command) {
    let name = cmd.get_name().to_string();
    clap_complete::generate(shell, &mut cmd, name, &mut std::io::stdout());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_per_command_and_subcommand_without_hidden_ones() {
        let cmd = Command::new("tool")
            .about("a tool")
            .subcommand(
                Command::new("backend")
                    .about("backends")
                    .subcommand(Command::new("add").about("add one")),
            )
            .subcommand(Command::new("manual").hide(true));
        let dir = std::env::temp_dir().join(format!("sluice-man-{}", std::process::id()));
        let files = write_man_pages(cmd, &dir).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|f| f.rsplit('/').next().unwrap().to_string())
            .collect();
        assert_eq!(names, ["tool.1", "tool-backend.1", "tool-backend-add.1"]);
        let page = std::fs::read_to_string(dir.join("tool-backend-add.1")).unwrap();
        assert!(page.contains(".TH tool-backend-add 1"), "{page}");
        assert!(page.contains("tool backend add"), "{page}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

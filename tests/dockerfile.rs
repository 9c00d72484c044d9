//! What can be checked of the container image without a container engine: the Dockerfile builds the
//! binary with the command CI runs, copies that binary, runs it as a non-root user from a base pinned
//! by digest, and has curl for the runbook's `kubectl exec ... curl`.

const REPO: &str = env!("CARGO_MANIFEST_DIR");

struct Stage {
    from: String,
    alias: Option<String>,
    instructions: Vec<(String, String)>,
}

/// The Dockerfile's stages, each with its instructions (continuation lines joined, comments dropped).
fn stages() -> Vec<Stage> {
    let text = std::fs::read_to_string(format!("{REPO}/Dockerfile")).expect("a Dockerfile at the repo root");
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        match line.strip_suffix('\\') {
            Some(head) => current.push_str(head),
            None => {
                current.push_str(line);
                logical.push(std::mem::take(&mut current));
            }
        }
    }
    let mut stages: Vec<Stage> = Vec::new();
    for line in logical {
        let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        let (word, rest) = (word.to_ascii_uppercase(), rest.trim().to_string());
        if word == "FROM" {
            let parts: Vec<&str> = rest.split_whitespace().collect();
            let alias = match parts.as_slice() {
                [_, as_, alias] if as_.eq_ignore_ascii_case("as") => Some(alias.to_string()),
                _ => None,
            };
            stages.push(Stage { from: parts[0].to_string(), alias, instructions: Vec::new() });
        } else {
            stages.last_mut().expect("an instruction before the first FROM").instructions.push((word, rest));
        }
    }
    stages
}

fn all(stage: &Stage, word: &str) -> Vec<String> {
    stage.instructions.iter().filter(|(w, _)| w == word).map(|(_, r)| r.clone()).collect()
}

fn bin_name() -> String {
    let manifest = std::fs::read_to_string(format!("{REPO}/Cargo.toml")).unwrap();
    let bin = manifest.split("[[bin]]").nth(1).expect("a [[bin]] section");
    let line = bin.lines().find(|l| l.trim_start().starts_with("name")).expect("a bin name");
    line.split('"').nth(1).unwrap().to_string()
}

#[test]
fn the_image_runs_the_binary_the_build_stage_compiles_with_the_ci_command() {
    let stages = stages();
    assert!(stages.len() >= 2, "a multi-stage build: compile, then a small runtime");
    let runtime = stages.last().unwrap();
    let copies = all(runtime, "COPY");
    let copy = copies.iter().find(|c| c.starts_with("--from=")).expect("the runtime copies from the build stage");
    let parts: Vec<&str> = copy.split_whitespace().collect();
    let [from, source, target] = parts.as_slice() else { panic!("COPY --from=<stage> <src> <dst>, got {copy}") };
    let build_alias = from.trim_start_matches("--from=");
    let build = stages.iter().find(|s| s.alias.as_deref() == Some(build_alias)).expect("the named build stage");

    let command = "cargo build --release --locked";
    assert!(all(build, "RUN").iter().any(|r| r.contains(command)), "the build stage must run `{command}`");
    let ci = std::fs::read_to_string(format!("{REPO}/.ci/run")).unwrap();
    assert!(ci.contains(command), ".ci/run must build the same release binary the image ships");

    let workdir = all(build, "WORKDIR").last().cloned().expect("the build stage sets WORKDIR");
    assert_eq!(*source, format!("{workdir}/target/release/{}", bin_name()), "the image copies the release binary");

    let entrypoint: Vec<String> =
        serde_json::from_str(&all(runtime, "ENTRYPOINT").last().cloned().expect("an ENTRYPOINT")).expect("exec form");
    assert_eq!(entrypoint.first().map(String::as_str), Some(*target), "the entrypoint is the copied binary");
}

#[test]
fn the_runtime_stage_is_pinned_by_digest_runs_as_non_root_and_has_curl() {
    let stages = stages();
    let runtime = stages.last().unwrap();
    let digest = runtime.from.split_once("@sha256:").map(|(_, d)| d).unwrap_or_default();
    assert!(
        digest.len() == 64 && digest.chars().all(|c| c.is_ascii_hexdigit()),
        "runtime base {} is not pinned by digest",
        runtime.from
    );
    let user = all(runtime, "USER").last().cloned().expect("the runtime sets USER");
    let uid: u32 = user.split(':').next().unwrap().parse().expect("a numeric uid (runAsNonRoot needs one)");
    assert_ne!(uid, 0, "the image must not run as root");
    let chart = std::fs::read_to_string(format!("{REPO}/deploy/chart/vpsie-autoscaler/values.yaml")).unwrap();
    assert!(chart.contains(&format!("runAsUser: {uid}")), "the chart runs the image's user {uid}");
    assert!(
        all(runtime, "RUN").iter().any(|r| r.contains("apt-get install") && r.contains(" curl")),
        "curl must be in the image for the runbook's kubectl exec"
    );
}

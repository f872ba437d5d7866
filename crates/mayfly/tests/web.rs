//! The web dashboard in a real browser (headless Chromium from Debian, driven through its
//! chromedriver, both inside the test daemon's network namespace): log in, launch an instance
//! from the page, see it running, run a command in its terminal and see the output, reset it,
//! remove it. With `MAYFLY_SCREENSHOTS=1` the main pages are saved to docs/screenshots/.

mod common;

use std::time::Duration;

use common::tls::create_token;
use common::webdriver::Browser;
use common::*;

/// The daemon's TLS listener inside its namespace, where the page is served.
const LISTEN: &str = "127.0.0.1:9443";
const WAIT: Duration = Duration::from_secs(20);
/// An init that prints what it finds in /tmp/say, as the launch form's command line.
const LOOP: &str =
    "sh -c 'while :; do [ -e /tmp/say ] && { cat /tmp/say; rm /tmp/say; }; sleep 0.1; done'";
const LOOP_SCRIPT: &str =
    "while :; do [ -e /tmp/say ] && { cat /tmp/say; rm /tmp/say; }; sleep 0.1; done";

/// A daemon that serves the page on [`LISTEN`] (TLS, authenticated).
fn daemon() -> TestDaemon {
    TestDaemon::start_with(&["--listen", LISTEN])
}

/// The page's address.
struct Site {
    url: String,
}

fn screenshot(b: &Browser, name: &str) {
    if std::env::var_os("MAYFLY_SCREENSHOTS").is_none_or(|v| v != "1") {
        return;
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/screenshots");
    std::fs::create_dir_all(&dir).expect("create docs/screenshots");
    // Let the page settle (fonts, the terminal's cursor).
    std::thread::sleep(Duration::from_millis(400));
    b.screenshot(&dir.join(format!("{name}.png")));
}

fn goto_hash(b: &Browser, site: &Site, hash: &str) {
    b.goto(&format!("{}{hash}", site.url));
}

/// The page open in a browser, logged in with a token made on the daemon's host.
fn open_dashboard(d: &TestDaemon) -> (Site, Browser) {
    let site = Site {
        url: format!("https://{LISTEN}/"),
    };
    let b = Browser::start(d);
    b.goto(&site.url);
    log_in(&b, &create_token(d, "web"));
    (site, b)
}

/// Logs in on the page's form.
fn log_in(b: &Browser, token: &str) {
    b.set_field("#login-form #token", token);
    b.click_on("#login");
    b.wait_for("#nav:not([hidden])", WAIT);
}

#[test]
fn dashboard_launches_runs_a_terminal_resets_and_removes_an_instance() {
    let d = daemon();
    let site = Site {
        url: format!("https://{LISTEN}/"),
    };
    let b = Browser::start(&d);
    b.goto(&site.url);

    // Without a session the page asks for a token; a wrong one is refused.
    b.wait_for("#login-form #token", WAIT);
    screenshot(&b, "login");
    log_in_refused(&b, "not-a-token");
    log_in(&b, &create_token(&d, "web"));

    // The instances page, empty.
    b.wait_text("#instances", "No instances", WAIT);
    screenshot(&b, "instances-empty");

    // Launch from the form: busybox, a name, a command, a memory limit.
    b.click_on("#nav-launch");
    b.wait_for("#launch-form", WAIT);
    b.set_field("#launch-template", "busybox");
    b.set_field("#launch-name", "web1");
    // The init prints what it finds in /tmp/say (the command line is quoted as a shell's).
    b.set_field("#launch-command", LOOP);
    b.set_field("#launch-form input[name=memory]", "64M");
    screenshot(&b, "launch");
    b.click_on("#launch");
    b.wait_for("#instance[data-state=running]", WAIT);
    // The daemon agrees: it runs, with what the form said.
    let info = d.info("web1");
    assert_eq!(info["state"], "running", "{info}");
    assert_eq!(
        info["command"],
        serde_json::json!(["sh", "-c", LOOP_SCRIPT]),
        "{info}"
    );
    assert_eq!(info["limits"]["memory"], 64 * 1024 * 1024, "{info}");
    b.wait_text("#instance", "64 MiB", WAIT);
    screenshot(&b, "instance");

    // Its console log, followed: what the instance writes later shows up.
    b.click_on("#follow-log");
    d.sh("web1", "echo logged-$((5*5)) > /tmp/x; mv /tmp/x /tmp/say");
    b.wait_text("#log", "logged-25", WAIT);

    // The list shows it running, with its template and version.
    goto_hash(&b, &site, "#/instances");
    b.wait_text("tr[data-instance=web1] .state-cell", "running", WAIT);
    b.wait_text("tr[data-instance=web1]", "busybox@1", WAIT);
    screenshot(&b, "instances");

    // Its terminal: run a command and see its output (computed in the instance, so the echo
    // of what was typed does not count), and leave a file behind for the reset to take.
    b.click_on("tr[data-instance=web1] a[data-action=terminal]");
    b.wait_for("#terminal[data-connected=true]", WAIT);
    let input = b.wait_for(".xterm-helper-textarea", WAIT);
    b.type_into(&input, "echo web-$((6*7)) > /marker; cat /marker\n");
    b.wait_text("#terminal .xterm-rows", "web-42", WAIT);
    screenshot(&b, "terminal");
    assert_eq!(d.sh("web1", "cat /marker").trim(), "web-42");
    // Ending the shell ends the page's terminal with its status.
    b.type_into(&input, "exit 3\n");
    b.wait_text("#terminal-status", "exited with status 3", WAIT);

    // Reset from the instance's page: the file is gone, the instance runs again.
    goto_hash(&b, &site, "#/instances/web1");
    b.click_on("#instance button[data-action=reset]");
    b.wait_text("#flash", "web1: reset done", WAIT);
    b.wait_for("#instance[data-state=running]", WAIT);
    wait_state(&d, "web1", "running");
    assert!(!exists_in(&d, "web1", "/marker"), "the reset kept /marker");

    // The other pages.
    goto_hash(&b, &site, "#/templates");
    b.wait_text("tr[data-template=busybox]", "busybox", WAIT);
    screenshot(&b, "templates");
    goto_hash(&b, &site, "#/templates/busybox");
    b.wait_text("#versions", "@1", WAIT);
    screenshot(&b, "template");
    goto_hash(&b, &site, "#/resources");
    b.wait_text("#flavors-card", "tiny", WAIT);
    screenshot(&b, "resources");
    goto_hash(&b, &site, "#/events");
    b.wait_for("#events", WAIT);
    screenshot(&b, "events");

    // Remove, after confirming.
    goto_hash(&b, &site, "#/instances");
    b.click_on("tr[data-instance=web1] button[data-action=remove]");
    b.click_on("#confirm-yes");
    b.wait_gone("tr[data-instance=web1]", WAIT);
    assert!(
        is_gone(&d, "web1"),
        "the page removed web1 but the daemon has it"
    );

    // Logging out ends the session: the page asks for a token again, and the daemon
    // refuses the old cookie.
    b.click_on("#logout");
    b.wait_for("#login-form #token", WAIT);
    let status = b.execute(
        "return fetch('/v1/instances', {credentials: 'same-origin'}).then(r => r.status);",
        &[],
    );
    assert_eq!(status, 401, "the session outlived the logout");

    b.quit();
    d.finish();
}

/// Tries to log in with a wrong token: the page says why and stays on the form.
fn log_in_refused(b: &Browser, token: &str) {
    b.set_field("#login-form #token", token);
    b.click_on("#login");
    b.wait_for("#flash.error:not([hidden])", WAIT);
    assert!(b.find("#login-form").is_some(), "{}", b.page_text());
    assert!(b.find("#nav:not([hidden])").is_none(), "{}", b.page_text());
}

#[test]
fn dashboard_snapshots_restores_clones_publishes_and_rolls_back() {
    let d = daemon();
    launch(&d, "web2", &["--persistent"], Some("sleep 3600"));
    wait_state(&d, "web2", "running");
    d.sh("web2", "echo one > /data");
    let (site, b) = open_dashboard(&d);

    // A snapshot from the instance's page.
    goto_hash(&b, &site, "#/instances/web2");
    b.wait_for("#instance[data-state=running]", WAIT);
    b.set_field("#snapshot-form input[name=snapshot]", "s1");
    b.click_on("#snapshot-form button");
    b.wait_for("tr[data-snapshot=s1]", WAIT);
    assert_eq!(
        d.json(&["snapshot", "list", "web2", "--json"])[0]["name"],
        "s1"
    );

    // Restore it, after confirming: what changed since is gone.
    d.sh("web2", "echo two > /data");
    b.click_on("tr[data-snapshot=s1] button[data-action=restore]");
    b.click_on("#confirm-yes");
    b.wait_text("#flash", "restored to s1", WAIT);
    wait_state(&d, "web2", "running");
    assert_eq!(d.sh("web2", "cat /data").trim(), "one");

    // A schedule, added from the page while live events re-render it.
    b.set_field("#schedule-form select[name=action]", "snapshot");
    b.set_field("#schedule-form input[name=cron]", "0 3 * * *");
    b.set_field("#schedule-form input[name=keep]", "2");
    b.click_on("#schedule-form button");
    b.wait_for("tr[data-schedule]", WAIT);
    let schedules = d.json(&["schedule", "list", "web2", "--json"]);
    assert_eq!(schedules[0]["cron"], "0 3 * * *", "{schedules}");
    assert_eq!(schedules[0]["action"], "snapshot", "{schedules}");
    assert_eq!(schedules[0]["keep"], 2, "{schedules}");

    // Clone it from the snapshot.
    b.set_field("#clone-form input[name=name]", "web3");
    b.set_field("#clone-form select[name=snapshot]", "s1");
    b.click_on("#clone-form button");
    b.wait_for("#instance[data-instance=web3]", WAIT);
    wait_state(&d, "web3", "running");
    assert_eq!(d.sh("web3", "cat /data").trim(), "one");

    // Publish it as a template, twice: two versions.
    goto_hash(&b, &site, "#/instances/web2");
    b.wait_for("#publish-form", WAIT);
    for message in ["first", "second"] {
        b.set_field("#publish-form input[name=template]", "pub");
        b.set_field("#publish-form input[name=message]", message);
        b.click_on("#publish-form button");
        b.wait_text("#flash", "published as pub@", WAIT);
        b.execute("document.getElementById('flash').hidden = true;", &[]);
    }
    assert_eq!(template_info(&d, "pub")["current_version"], 2);

    // The template's history, and a rollback to the first version.
    goto_hash(&b, &site, "#/templates/pub");
    b.wait_text("#versions", "second", WAIT);
    b.wait_text("#versions tr[data-version='2']", "(current)", WAIT);
    b.click_on("#versions tr[data-version='1'] button[data-action=rollback]");
    b.wait_text("#versions tr[data-version='1']", "(current)", WAIT);
    assert_eq!(template_info(&d, "pub")["current_version"], 1);
    screenshot(&b, "template-versions");

    // Build an application template over busybox, its progress streamed into the page.
    goto_hash(&b, &site, "#/templates");
    b.set_field("#build-form input[name=name]", "app1");
    b.set_field("#build-form select[name=from]", "busybox");
    b.set_field("#build-form textarea[name=run]", "echo built > /built");
    b.set_field("#build-form input[name=command]", "sleep 3600");
    b.click_on("#build-form button");
    b.wait_text("#flash", "app1: built", WAIT);
    b.wait_text("#build-log", "done: app1@1", WAIT);
    b.wait_for("tr[data-template=app1]", WAIT);
    assert_eq!(template_info(&d, "app1")["current_version"], 1);
    // And launch busybox with it stacked over.
    goto_hash(&b, &site, "#/launch");
    b.set_field("#launch-template", "busybox");
    b.set_field("#launch-form input[name=apps]", "app1");
    b.set_field("#launch-name", "web5");
    b.set_field("#launch-command", "sleep 3600");
    b.click_on("#launch");
    b.wait_for("#instance[data-instance=web5]", WAIT);
    wait_state(&d, "web5", "running");
    assert_eq!(d.sh("web5", "cat /built").trim(), "built");

    // Launch from the snapshot with the launch form (a clone).
    goto_hash(&b, &site, "#/launch");
    b.click_on("#launch-form input[name=source][value=snapshot]");
    b.set_field("#launch-snapshot", "web2/s1");
    b.set_field("#launch-name", "web4");
    b.click_on("#launch");
    b.wait_for("#instance[data-instance=web4]", WAIT);
    wait_state(&d, "web4", "running");
    assert_eq!(d.sh("web4", "cat /data").trim(), "one");

    // A refusal shows the daemon's message.
    goto_hash(&b, &site, "#/launch");
    b.set_field("#launch-template", "busybox");
    b.set_field("#launch-name", "web4");
    b.set_field("#launch-command", "sleep 1");
    b.click_on("#launch");
    b.wait_text("#flash.error", "web4", WAIT);
    screenshot(&b, "error");

    // Revoking the token ends its session: the next call sends the page back to the login.
    d.ok(&["token", "revoke", "web"]);
    b.click_on("#launch");
    b.wait_for("#login-form #token", WAIT);
    b.wait_text("#flash.error", "the session has ended", WAIT);

    b.quit();
    d.finish();
}

#[test]
fn dashboard_attaches_volumes_imports_templates_and_shows_events_since() {
    let d = daemon();
    launch(&d, "vm", &["--no-start"], Some("sleep 3600"));
    let (site, b) = open_dashboard(&d);

    // A volume created on the page, attached read-only to the stopped instance, detached.
    goto_hash(&b, &site, "#/resources");
    b.set_field("#volume-form input[name=name]", "vol1");
    b.click_on("#volume-form button");
    let row = "#volumes-card tr[data-name=vol1]";
    b.wait_for(&format!("{row} .attach-form"), WAIT);
    b.set_field(&format!("{row} .attach-form input[name=instance]"), "vm");
    b.set_field(&format!("{row} .attach-form input[name=path]"), "/srv/data");
    b.click_on(&format!("{row} .attach-form input[name=readonly]"));
    b.click_on(&format!("{row} button[data-action=attach]"));
    b.wait_text(
        &format!("{row} .attached"),
        "vm:/srv/data (read-only)",
        WAIT,
    );
    screenshot(&b, "volume-attached");
    let info = d.json(&["volume", "info", "vol1", "--json"]);
    assert_eq!(
        info["attached"],
        serde_json::json!({"instance": "vm", "path": "/srv/data", "readonly": true}),
        "{info}"
    );
    b.click_on(&format!("{row} button[data-action=detach]"));
    b.wait_for(&format!("{row} .attach-form"), WAIT);
    let info = d.json(&["volume", "info", "vol1", "--json"]);
    assert!(info["attached"].is_null(), "{info}");
    // A refusal (no such instance) shows the daemon's message.
    b.set_field(&format!("{row} .attach-form input[name=instance]"), "nope");
    b.set_field(&format!("{row} .attach-form input[name=path]"), "/srv/data");
    b.click_on(&format!("{row} button[data-action=attach]"));
    b.wait_text("#flash.error", "nope", WAIT);

    // Events since a chosen time: none after a future one, the volume's in the last 10 min;
    // a bad value is the daemon's refusal.
    goto_hash(&b, &site, "#/events");
    b.set_field("#events-since", "other");
    b.set_field("#events-since-other", "2099-01-01T00:00:00Z");
    b.click_on("#events-form button");
    b.wait_for("#events tbody[data-since='2099-01-01T00:00:00Z']", WAIT);
    assert!(
        b.find("#events tbody tr").is_none(),
        "{}",
        b.text("#events")
    );
    b.set_field("#events-since", "10m");
    b.wait_for("#events tbody[data-since='10m']", WAIT);
    b.wait_text("#events", "vol1", WAIT);
    screenshot(&b, "events-since");
    b.set_field("#events-since", "other");
    b.set_field("#events-since-other", "yesterday-ish");
    b.click_on("#events-form button");
    b.wait_text("#flash.error", "invalid `since`", WAIT);

    // Import a template from a path on the daemon's host, its progress shown.
    let from_path = d.dir.join("web-import.tar");
    std::fs::write(
        &from_path,
        common::imports::rootfs_tar(&d, "path", "from-path"),
    )
    .expect("write the tar");
    goto_hash(&b, &site, "#/templates");
    b.set_field("#import-form input[name=name]", "imp1");
    b.click_on("#import-form input[name=source][value=path]");
    b.set_field(
        "#import-form input[name=path]",
        &from_path.display().to_string(),
    );
    b.set_field("#import-form input[name=message]", "from the page");
    b.click_on("#import-form button[data-action=import]");
    b.wait_text("#flash", "imp1: imported", WAIT);
    b.wait_text("#import-log", "done: imp1@1", WAIT);
    b.wait_for("tr[data-template=imp1]", WAIT);
    let info = template_info(&d, "imp1");
    assert_eq!(version(&info, 1)["message"], "from the page", "{info}");

    // And an archive uploaded from the browser (a file input), with its init command.
    let upload = d.dir.join("web-upload.tar");
    std::fs::write(
        &upload,
        common::imports::rootfs_tar(&d, "upload", "uploaded"),
    )
    .expect("write the tar");
    b.set_field("#import-form input[name=name]", "imp2");
    b.click_on("#import-form input[name=source][value=upload]");
    let file = b.wait_for("#import-form input[type=file]", WAIT);
    b.type_into(&file, &upload.display().to_string());
    b.set_field("#import-form input[name=command]", "sleep 3600");
    b.click_on("#import-form button[data-action=import]");
    b.wait_text("#flash", "imp2: imported", WAIT);
    b.wait_text("#import-log", "uploading web-upload.tar", WAIT);
    b.wait_text("#import-log", "done: imp2@1", WAIT);
    screenshot(&b, "import");
    let info = template_info(&d, "imp2");
    assert_eq!(
        version(&info, 1)["config"]["command"],
        serde_json::json!(["sleep", "3600"]),
        "{info}"
    );
    d.ok(&["launch", "imp2", "--name", "up"]);
    wait_state(&d, "up", "running");
    assert_eq!(d.sh("up", "cat /marker").trim(), "uploaded");
    // A second import under the same name is refused with the daemon's word.
    b.click_on("#import-form button[data-action=import]");
    b.wait_text("#flash.error", "imp2", WAIT);

    // The terminal with a user, a directory and an environment, as `exec -t` takes them.
    d.ok(&["start", "vm"]);
    wait_state(&d, "vm", "running");
    goto_hash(&b, &site, "#/instances/vm/terminal");
    b.wait_for("#terminal[data-connected=true]", WAIT);
    b.set_field("#terminal-form input[name=user]", "1234:1234");
    b.set_field("#terminal-form input[name=workdir]", "/tmp");
    b.set_field("#terminal-form input[name=env]", "GREETING='hi-there'");
    b.click_on("#terminal-form button");
    b.wait_for("#terminal[data-connected=true]", WAIT);
    let input = b.wait_for(".xterm-helper-textarea", WAIT);
    b.type_into(&input, "echo as-$(id -u)-in-$(pwd)-$GREETING\n");
    b.wait_text("#terminal .xterm-rows", "as-1234-in-/tmp-hi-there", WAIT);

    b.quit();
    d.finish();
}

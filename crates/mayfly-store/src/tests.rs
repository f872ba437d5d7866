use super::*;

pub(crate) fn layer(n: u8) -> LayerRecord {
    LayerRecord {
        digest: format!("blake3:{}", format!("{n:02x}").repeat(32)),
        size: u64::from(n) * 10,
        entries: u64::from(n),
    }
}

pub(crate) fn instance(name: &str, template: &str, mode: Mode) -> InstanceRecord {
    InstanceRecord {
        id: format!("id-{name}"),
        name: name.into(),
        template: template.into(),
        pinned_version: None,
        mode,
        config: InstanceConfig::default(),
        id_base: None,
        created_at: now(),
        run: None,
        last_exit: None,
        writable_gen: 1,
        writable_version: None,
        layer_since: None,
        next_run: None,
        paused: false,
        restart_state: None,
    }
}

pub(crate) fn v<'a>(
    layers: &'a [LayerRecord],
    cfg: &'a TemplateConfig,
    meta: &'a VersionMeta,
) -> NewVersion<'a> {
    NewVersion {
        layers,
        config: cfg,
        message: "m",
        meta,
    }
}

/// Creates template `t` (one layer), which the instances of a test name.
pub(crate) fn with_template(s: &mut Store) {
    let cfg = TemplateConfig::default();
    s.create_template(
        "t",
        false,
        &v(&[layer(1)], &cfg, &VersionMeta::default()),
        None,
    )
    .unwrap();
}

pub(crate) fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state")).unwrap();
    (dir, store)
}

#[test]
fn templates_share_layers_and_refuse_duplicates() {
    let (_d, mut s) = open();
    let cfg = TemplateConfig::default();
    s.create_template(
        "a",
        false,
        &v(&[layer(1), layer(2)], &cfg, &VersionMeta::default()),
        None,
    )
    .unwrap();
    s.create_template(
        "b",
        false,
        &v(&[layer(1)], &cfg, &VersionMeta::default()),
        None,
    )
    .unwrap();
    assert_eq!(s.layer_digests().unwrap().len(), 2);
    let a = s.template("a").unwrap();
    assert_eq!(a.current_version, 1);
    assert_eq!(a.version(1).unwrap().layers, vec![layer(1), layer(2)]);
    assert!(matches!(
        s.create_template(
            "a",
            false,
            &v(&[layer(3)], &cfg, &VersionMeta::default()),
            None
        ),
        Err(StoreError::AlreadyExists { .. })
    ));
    // The failed creation left nothing behind.
    assert!(!s.has_layer(&layer(3).digest).unwrap());
    s.delete_template("a").unwrap();
    assert_eq!(s.drop_unreferenced_layers().unwrap(), vec![layer(2).digest]);
    assert!(s.has_layer(&layer(1).digest).unwrap());
}

#[test]
fn templates_in_use_cannot_be_deleted() {
    let (_d, mut s) = open();
    s.create_template(
        "t",
        false,
        &v(
            &[layer(1)],
            &TemplateConfig::default(),
            &VersionMeta::default(),
        ),
        None,
    )
    .unwrap();
    s.insert_instance(&mut instance("web", "t", Mode::Transient), false)
        .unwrap();
    match s.delete_template("t") {
        Err(StoreError::InUse { users, .. }) => assert_eq!(users, vec!["web".to_string()]),
        other => panic!("expected InUse, got {other:?}"),
    }
    s.delete_instance("id-web", Mode::Transient).unwrap();
    s.delete_template("t").unwrap();
}

#[test]
fn instances_need_a_known_template_and_a_unique_name() {
    let (_d, mut s) = open();
    assert!(matches!(
        s.insert_instance(&mut instance("x", "missing", Mode::Transient), false),
        Err(StoreError::NotFound {
            kind: "template",
            ..
        })
    ));
    s.create_template(
        "t",
        false,
        &v(
            &[layer(1)],
            &TemplateConfig::default(),
            &VersionMeta::default(),
        ),
        None,
    )
    .unwrap();
    s.insert_instance(&mut instance("x", "t", Mode::Ephemeral), false)
        .unwrap();
    let mut dup = instance("x", "t", Mode::Transient);
    dup.id = "other".into();
    assert!(matches!(
        s.insert_instance(&mut dup, false),
        Err(StoreError::AlreadyExists { .. })
    ));
}

#[test]
fn id_ranges_are_unique_and_reused_after_delete() {
    let (_d, mut s) = open();
    s.create_template(
        "t",
        false,
        &v(
            &[layer(1)],
            &TemplateConfig::default(),
            &VersionMeta::default(),
        ),
        None,
    )
    .unwrap();
    let mut a = instance("a", "t", Mode::Transient);
    let mut b = instance("b", "t", Mode::Transient);
    s.insert_instance(&mut a, true).unwrap();
    s.insert_instance(&mut b, true).unwrap();
    assert_eq!(a.id_base, Some(ID_BASE_START));
    assert_eq!(b.id_base, Some(ID_BASE_START + ID_RANGE));
    s.delete_instance(&a.id, Mode::Transient).unwrap();
    let mut c = instance("c", "t", Mode::Transient);
    s.insert_instance(&mut c, true).unwrap();
    assert_eq!(c.id_base, Some(ID_BASE_START));
}

#[test]
fn run_records_and_journal_round_trip() {
    let (_d, mut s) = open();
    s.create_template(
        "t",
        false,
        &v(
            &[layer(1)],
            &TemplateConfig::default(),
            &VersionMeta::default(),
        ),
        None,
    )
    .unwrap();
    s.insert_instance(&mut instance("a", "t", Mode::Persistent), false)
        .unwrap();
    let run = RunRecord {
        pid: 42,
        start_time: 7,
        boot_id: "b".into(),
        version: 1,
        started_at: 3,
        apps: Vec::new(),
    };
    s.set_run("id-a", Mode::Persistent, Some(&run), None)
        .unwrap();
    assert_eq!(s.instance("a").unwrap().run, Some(run));
    let exit = ExitRecord {
        code: 137,
        signal: Some(9),
        at: 5,
        ending: Some(mayfly_api::Ending::Killed),
        oom_kills: 2,
    };
    s.set_run("id-a", Mode::Persistent, None, Some(&exit))
        .unwrap();
    let rec = s.instance("a").unwrap();
    assert_eq!((rec.run, rec.last_exit), (None, Some(exit)));

    let j = s
        .journal_begin("import", "t2", &[PathBuf::from("/x/tmp/1")])
        .unwrap();
    assert_eq!(
        s.journal_pending().unwrap()[0].paths,
        vec![PathBuf::from("/x/tmp/1")]
    );
    s.journal_end(j).unwrap();
    assert!(s.journal_pending().unwrap().is_empty());
}

#[test]
fn reopening_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = Store::open(dir.path()).unwrap();
        s.create_template(
            "t",
            true,
            &v(
                &[layer(1)],
                &TemplateConfig::default(),
                &VersionMeta::default(),
            ),
            None,
        )
        .unwrap();
    }
    let s = Store::open(dir.path()).unwrap();
    assert!(s.template("t").unwrap().builtin);
    assert_eq!(
        Layout::digest_of_dir("blake3-abc0"),
        Some("blake3:abc0".into())
    );
    assert_eq!(Layout::digest_of_dir("junk"), None);
}

#[test]
fn the_write_ahead_log_shrinks_back_after_checkpoints() {
    let (_d, mut s) = open();
    let wal = {
        let mut p = s.layout().db().into_os_string();
        p.push("-wal");
        std::path::PathBuf::from(p)
    };
    let size = || std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    let paths: Vec<std::path::PathBuf> = (0..40)
        .map(|i| std::path::PathBuf::from(format!("/state/tmp/{i:0>200}")))
        .collect();
    let (mut peak, mut shrank) = (0, false);
    for _ in 0..1500 {
        let id = s.journal_begin("import", "subject", &paths).unwrap();
        s.journal_end(id).unwrap();
        let now = size();
        shrank |= now < peak;
        peak = peak.max(now);
        if shrank && now <= 1 << 20 {
            break;
        }
    }
    assert!(
        peak > 1 << 20,
        "the log never grew past 1 MiB ({peak} bytes)"
    );
    assert!(shrank, "the log stayed at {} bytes", size());
    assert!(size() <= 1 << 20, "the log is {} bytes", size());
}

#[test]
fn the_name_remembers_where_it_pointed_before_it_last_moved_forward() {
    let (_d, mut s) = open();
    let cfg = TemplateConfig::default();
    let meta = VersionMeta::default();
    s.create_template("t", false, &v(&[layer(1)], &cfg, &meta), None)
        .unwrap();
    let prev = |s: &Store| s.template("t").unwrap().previous_version;
    assert_eq!(prev(&s), None);
    s.add_template_version("t", &v(&[layer(1), layer(2)], &cfg, &meta), None)
        .unwrap();
    assert_eq!(prev(&s), Some(1));
    s.add_template_version("t", &v(&[layer(1), layer(3)], &cfg, &meta), None)
        .unwrap();
    assert_eq!(prev(&s), Some(2));
    s.set_current_version("t", 1).unwrap();
    assert_eq!(
        prev(&s),
        None,
        "a rollback turns away from where it was: that is nowhere to go back to"
    );
    s.set_current_version("t", 3).unwrap();
    assert_eq!(
        prev(&s),
        Some(1),
        "a move forward remembers where it came from"
    );
    s.set_current_version("t", 3).unwrap();
    assert_eq!(
        prev(&s),
        Some(1),
        "pointing where it points already is no move"
    );
    s.set_current_version("t", 1).unwrap();
    s.add_template_version("t", &v(&[layer(1), layer(4)], &cfg, &meta), None)
        .unwrap();
    assert_eq!(
        prev(&s),
        Some(1),
        "a patch after a rollback came from 1, not from the 3 turned away from"
    );
    s.set_current_version("t", 2).unwrap();
    s.set_current_version("t", 4).unwrap();
    assert_eq!(prev(&s), Some(2));
    s.delete_version("t", 2).unwrap();
    assert_eq!(prev(&s), None, "a removed version is nowhere to go back to");
    s.set_current_version("t", 3).unwrap();
    s.delete_version("t", 4).unwrap();
    s.add_template_version("t", &v(&[layer(1), layer(5)], &cfg, &meta), None)
        .unwrap();
    assert_eq!(s.template("t").unwrap().current_version, 4);
    assert_eq!(
        prev(&s),
        Some(3),
        "the new version 4 is not the removed one"
    );
}

#[test]
fn the_previous_version_of_an_older_catalogue_is_the_one_below_the_current() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("state");
    {
        let mut s = Store::open(&root).unwrap();
        let cfg = TemplateConfig::default();
        let meta = VersionMeta::default();
        for (name, versions, current) in [("a", 3u8, 3u32), ("b", 3, 2), ("c", 2, 1)] {
            s.create_template(name, false, &v(&[layer(1)], &cfg, &meta), None)
                .unwrap();
            for i in 2..=versions {
                s.add_template_version(name, &v(&[layer(1), layer(i)], &cfg, &meta), None)
                    .unwrap();
            }
            s.set_current_version(name, current).unwrap();
        }
    }
    // Back to schema 4, as a catalogue written by the previous mayfly.
    let conn = rusqlite::Connection::open(root.join("mayfly.db")).unwrap();
    conn.execute_batch(crate::schema::BACK_TO_7).unwrap();
    conn.execute_batch(
        "DROP TABLE flavors; ALTER TABLE instances DROP COLUMN paused; \
         DROP TABLE channels; DROP TABLE interfaces; DROP TABLE networks; \
         ALTER TABLE templates DROP COLUMN previous_version; PRAGMA user_version = 4;",
    )
    .unwrap();
    drop(conn);
    let s = Store::open(&root).unwrap();
    let prev = |n: &str| s.template(n).unwrap().previous_version;
    assert_eq!(prev("a"), Some(2));
    assert_eq!(prev("b"), Some(1));
    assert_eq!(prev("c"), None);
}

#[test]
fn template_configs_stored_before_entrypoint_and_user_read_as_cmd() {
    let (_d, mut s) = open();
    let cfg = TemplateConfig::default();
    s.create_template(
        "old",
        false,
        &v(&[layer(1)], &cfg, &VersionMeta::default()),
        None,
    )
    .unwrap();
    // What an older mayfly wrote: the whole command, nothing else of it.
    s.conn
        .execute(
            "UPDATE template_versions SET config = ?1 WHERE template = 'old'",
            [r#"{"command":["/sbin/init","--x"],"env":["A=1"],"workdir":"/srv","stop_signal":"SIGINT"}"#],
        )
        .unwrap();
    let rec = s.template("old").unwrap();
    let config = &rec.version(1).unwrap().config;
    assert_eq!(config.cmd, ["/sbin/init", "--x"]);
    assert!(config.entrypoint.is_empty());
    assert_eq!(config.command, ["/sbin/init", "--x"]);
    assert_eq!(config.user, "");
    assert_eq!(
        (config.workdir.as_str(), config.stop_signal.as_str()),
        ("/srv", "SIGINT")
    );
    // And a new one keeps them apart.
    let mut split = TemplateConfig::default();
    split.set_command(vec!["/bin/app".into()], vec!["--port".into(), "80".into()]);
    split.user = "nobody".into();
    s.create_template(
        "new",
        false,
        &v(&[layer(1)], &split, &VersionMeta::default()),
        None,
    )
    .unwrap();
    assert_eq!(s.template("new").unwrap().version(1).unwrap().config, split);
}

fn network(name: &str, subnet: &str) -> NetworkRecord {
    NetworkRecord {
        name: name.into(),
        id: format!("{name}-id"),
        bridge: format!("mf-{name}"),
        subnet: subnet.parse().unwrap(),
        isolated: false,
        nat: true,
        upstream: vec![],
        created_at: now(),
        subnet6: Some("fd12:3456:789a::".parse().unwrap()),
    }
}

fn on(name: &str, nets: &[&str]) -> InstanceRecord {
    let mut r = instance(name, "t", Mode::Transient);
    r.config.networks = nets.iter().map(|n| (*n).to_owned()).collect();
    r
}

#[test]
fn networks_refuse_taken_names_and_overlapping_subnets() {
    let (_d, mut s) = open();
    s.create_network(&network("a", "10.77.0.0/24")).unwrap();
    let e = s.create_network(&network("a", "10.78.0.0/24")).unwrap_err();
    assert!(matches!(e, StoreError::AlreadyExists { .. }), "{e}");
    let e = s
        .create_network(&network("b", "10.77.0.128/25"))
        .unwrap_err();
    assert!(e.to_string().contains("network `a` (10.77.0.0/24)"), "{e}");
    s.create_network(&network("b", "10.78.0.0/24")).unwrap();
    let names: Vec<_> = s.networks().unwrap().into_iter().map(|n| n.name).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(s.network("b").unwrap(), network("b", "10.78.0.0/24"));
    // IPv6 is optional: a network without it reads back without it.
    let mut c = network("c", "10.79.0.0/24");
    c.subnet6 = None;
    s.create_network(&c).unwrap();
    assert_eq!(s.network("c").unwrap().subnet6, None);
    assert_eq!(
        s.network("a").unwrap().subnet6.unwrap().to_string(),
        "fd12:3456:789a::"
    );
}

#[test]
fn instances_get_the_first_free_address_and_unique_macs_and_release_them() {
    let (_d, mut s) = open();
    with_template(&mut s);
    s.create_network(&network("a", "10.77.0.0/24")).unwrap();
    s.create_network(&network("b", "10.78.0.0/24")).unwrap();
    let mut x = on("x", &["a", "b"]);
    s.insert_instance(&mut x, false).unwrap();
    let mut y = on("y", &["a"]);
    s.insert_instance(&mut y, false).unwrap();
    let xi = s.interfaces(&x.id).unwrap();
    assert_eq!(xi.len(), 2);
    assert_eq!((xi[0].idx, xi[0].network.as_str()), (0, "a"));
    assert_eq!(xi[0].ipv4.to_string(), "10.77.0.2");
    assert_eq!((xi[1].idx, xi[1].ipv4.to_string()), (1, "10.78.0.2".into()));
    let yi = s.interfaces(&y.id).unwrap();
    assert_eq!(yi[0].ipv4.to_string(), "10.77.0.3");
    let macs: std::collections::HashSet<_> =
        s.all_interfaces().unwrap().iter().map(|i| i.mac).collect();
    assert_eq!(macs.len(), 3);
    // A network in use is not removed, and says by whom.
    let e = s.delete_network("a").unwrap_err().to_string();
    assert!(e.contains("x, y"), "{e}");
    // Removal releases the addresses: the next instance gets x's.
    s.delete_instance(&x.id, Mode::Transient).unwrap();
    assert!(s.interfaces(&x.id).unwrap().is_empty());
    let mut z = on("z", &["a"]);
    s.insert_instance(&mut z, false).unwrap();
    assert_eq!(
        s.interfaces(&z.id).unwrap()[0].ipv4.to_string(),
        "10.77.0.2"
    );
    assert_ne!(s.interfaces(&z.id).unwrap()[0].mac, xi[0].mac);
    s.delete_instance(&y.id, Mode::Transient).unwrap();
    s.delete_instance(&z.id, Mode::Transient).unwrap();
    s.delete_network("a").unwrap();
    assert!(matches!(s.network("a"), Err(StoreError::NotFound { .. })));
}

#[test]
fn an_exhausted_subnet_refuses_the_instance_whole() {
    let (_d, mut s) = open();
    with_template(&mut s);
    s.create_network(&network("big", "10.77.0.0/24")).unwrap();
    s.create_network(&network("tiny", "10.9.0.0/30")).unwrap();
    let mut a = on("a", &["tiny"]);
    s.insert_instance(&mut a, false).unwrap();
    // The second interface cannot be allocated: the first one and the row go too (one
    // transaction, as a crash would leave it).
    let mut b = on("b", &["big", "tiny"]);
    let e = s.insert_instance(&mut b, false).unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(e, StoreError::SubnetExhausted { in_use: 1, .. }),
        "{msg}"
    );
    assert!(msg.contains("10.9.0.0/30 (1 in use)"), "{msg}");
    assert!(matches!(s.instance("b"), Err(StoreError::NotFound { .. })));
    assert!(s.network_interfaces("big").unwrap().is_empty());
    // An unknown network refuses the instance too.
    let mut c = on("c", &["nope"]);
    assert!(matches!(
        s.insert_instance(&mut c, false),
        Err(StoreError::NotFound {
            kind: "network",
            ..
        })
    ));
    assert!(matches!(s.instance("c"), Err(StoreError::NotFound { .. })));
}

#[test]
fn build_leases_are_dropped_and_renames_refuse_taken_names() {
    let (_d, mut s) = open();
    with_template(&mut s);
    s.create_network(&network("default", "10.77.0.0/24"))
        .unwrap();
    let lease = s
        .lease_build_interfaces("build1", &["default".to_owned()])
        .unwrap();
    assert_eq!(lease[0].ipv4.to_string(), "10.77.0.2");
    assert!(lease[0].build);
    let e = s.delete_network("default").unwrap_err().to_string();
    assert!(e.contains("build build1"), "{e}");
    let mut x = on("x", &["default"]);
    s.insert_instance(&mut x, false).unwrap();
    assert_eq!(s.drop_build_leases().unwrap(), 1);
    assert_eq!(s.all_interfaces().unwrap().len(), 1, "the instance's stays");
    let mut y = on("y", &[]);
    s.insert_instance(&mut y, false).unwrap();
    assert!(matches!(
        s.rename_instance(&x.id, "y"),
        Err(StoreError::AlreadyExists { .. })
    ));
    s.rename_instance(&x.id, "w").unwrap();
    assert_eq!(s.instance("w").unwrap().id, x.id);
    // Channels go with either of their instances.
    s.create_channel(&ChannelRecord {
        name: "c".into(),
        server: x.id.clone(),
        client: y.id.clone(),
        created_at: now(),
    })
    .unwrap();
    assert!(matches!(
        s.create_channel(&ChannelRecord {
            name: "c".into(),
            server: y.id.clone(),
            client: x.id.clone(),
            created_at: now(),
        }),
        Err(StoreError::AlreadyExists { .. })
    ));
    assert_eq!(s.channels_of(&y.id).unwrap().len(), 1);
    s.delete_instance(&y.id, Mode::Transient).unwrap();
    assert!(s.channels().unwrap().is_empty());
}

//! Unit tests of the limits syntax.

use super::*;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn set(key: &str, value: &str) -> Result<Limits, String> {
    let mut limits = Limits::default();
    limits.set_key(key, value).map(|()| limits)
}

fn err(key: &str, value: &str) -> String {
    set(key, value).expect_err(&format!("{key}={value} should be refused"))
}

#[test]
fn every_key_parses() {
    assert_eq!(set("cpus", "1.5").unwrap().cpus, Some(Cpus(1500)));
    assert_eq!(set("cpus", "2").unwrap().cpus, Some(Cpus(2000)));
    assert_eq!(set("cpus", ".25").unwrap().cpus, Some(Cpus(250)));
    assert_eq!(set("cpus", "0.01").unwrap().cpus, Some(Cpus(10)));
    assert_eq!(set("cpus", "1024").unwrap().cpus, Some(Cpus(1_024_000)));
    assert_eq!(set("cpu-weight", "1").unwrap().cpu_weight, Some(1));
    assert_eq!(set("cpu-weight", "10000").unwrap().cpu_weight, Some(10000));
    assert_eq!(
        set("cpuset", "0-3, 5").unwrap().cpuset.as_deref(),
        Some("0-3,5")
    );
    assert_eq!(
        set("cpuset", "4095").unwrap().cpuset.as_deref(),
        Some("4095")
    );
    assert_eq!(set("memory", "512M").unwrap().memory, Some(512 * MIB));
    assert_eq!(set("memory", "2GiB").unwrap().memory, Some(2 * GIB));
    assert_eq!(set("memory", "6M").unwrap().memory, Some(6 * MIB));
    assert_eq!(set("memory-reserve", "1").unwrap().memory_reserve, Some(1));
    assert_eq!(set("swap", "0").unwrap().swap, Some(0));
    assert_eq!(set("swap", "1G").unwrap().swap, Some(GIB));
    assert_eq!(set("pids", "8").unwrap().pids, Some(8));
    assert_eq!(set("io-weight", "500").unwrap().io_weight, Some(500));
    assert_eq!(
        set("io-max", "50M").unwrap().io_max,
        Some(IoMax {
            rbps: Some(50 * MIB),
            wbps: Some(50 * MIB),
            ..IoMax::default()
        })
    );
    assert_eq!(
        set("io-max", "rbps=1M,wiops=100").unwrap().io_max,
        Some(IoMax {
            rbps: Some(MIB),
            wiops: Some(100),
            ..IoMax::default()
        })
    );
    assert_eq!(
        set("io-max", "rbps=1M,wbps=2M,riops=10,wiops=20")
            .unwrap()
            .io_max,
        Some(IoMax {
            rbps: Some(MIB),
            wbps: Some(2 * MIB),
            riops: Some(10),
            wiops: Some(20),
        })
    );
    assert_eq!(set("disk", "16M").unwrap().disk, Some(16 * MIB));
    assert_eq!(set("disk", "10G").unwrap().disk, Some(10 * GIB));
    assert_eq!(set("net-rate", "10M").unwrap().net_rate, Some(10 * MIB));
    assert_eq!(
        set("net-rate", "100mbit").unwrap().net_rate,
        Some(12_500_000)
    );
    assert_eq!(set("net-rate", "8kbit").unwrap().net_rate, Some(1000));
    assert_eq!(
        set("net-rate", "1GBIT").unwrap().net_rate,
        Some(125_000_000)
    );
    assert_eq!(set("net-rate", "1.5mbit").unwrap().net_rate, Some(187_500));
}

#[test]
fn underscore_and_case_stand_for_the_key() {
    assert_eq!(
        set("memory_reserve", "1G").unwrap(),
        set("memory-reserve", "1G").unwrap()
    );
    assert_eq!(set("NET_RATE", "1M").unwrap().net_rate, Some(MIB));
    assert_eq!(set("cpu_weight", "7").unwrap().cpu_weight, Some(7));
    assert_eq!(set("io_max", "1M").unwrap(), set("io-max", "1M").unwrap());
}

#[test]
fn none_clears_every_key() {
    let mut full = Limits::default();
    for (key, value) in sample() {
        full.set_key(key, value).unwrap();
    }
    assert!(LIMIT_KEYS.iter().all(|k| full.get_key(k).is_some()));
    for key in LIMIT_KEYS {
        let mut cleared = full.clone();
        cleared.set_key(key, "none").unwrap();
        assert_eq!(cleared.get_key(key), None, "{key}");
        assert_eq!(cleared.changed_keys(&full), vec![*key]);
    }
    let mut all = full.clone();
    for key in LIMIT_KEYS {
        all.set_key(&key.replace('-', "_"), "NONE").unwrap();
    }
    assert!(all.is_empty());
}

/// One value of every key, in LIMIT_KEYS order.
fn sample() -> Vec<(&'static str, &'static str)> {
    vec![
        ("cpus", "1.25"),
        ("cpu-weight", "200"),
        ("cpuset", "0-1,3"),
        ("memory", "1G"),
        ("memory-reserve", "256M"),
        ("swap", "0"),
        ("pids", "100"),
        ("io-weight", "50"),
        ("io-max", "rbps=10M,riops=100"),
        ("disk", "1G"),
        ("net-rate", "100mbit"),
    ]
}

#[test]
fn get_key_round_trips() {
    let values: &[(&str, &[&str])] = &[
        ("cpus", &["0.01", "0.5", "1.125", "3", "1024"]),
        ("cpu-weight", &["1", "100", "10000"]),
        ("cpuset", &["0", "0-3,5", "1,2,4095"]),
        ("memory", &["6M", "1.5G", "7000000", "1T", "123456789"]),
        ("memory-reserve", &["1", "1K", "1.1M"]),
        ("swap", &["0", "1", "2G"]),
        ("pids", &["8", "4096"]),
        ("io-weight", &["1", "10000"]),
        (
            "io-max",
            &[
                "1",
                "5M",
                "rbps=1M",
                "wbps=3,wiops=4",
                "rbps=1M,wbps=2M,riops=1,wiops=2",
            ],
        ),
        ("disk", &["16M", "100G", "17000001"]),
        (
            "net-rate",
            &[
                "1000", "1001", "10M", "100mbit", "8kbit", "3gbit", "1.5mbit", "4K",
            ],
        ),
    ];
    for (key, values) in values {
        for value in *values {
            let first = set(key, value).unwrap();
            let shown = first.get_key(key).unwrap();
            let again = set(key, &shown).unwrap_or_else(|e| panic!("{key}={shown}: {e}"));
            assert_eq!(first, again, "{key}={value} shown as {shown}");
            assert_eq!(again.get_key(key).as_deref(), Some(shown.as_str()));
        }
    }
    assert_eq!(
        set("memory", "512M").unwrap().get_key("memory").unwrap(),
        "512M"
    );
    assert_eq!(
        set("memory", "2GiB").unwrap().get_key("memory").unwrap(),
        "2G"
    );
    assert_eq!(set("cpus", "1.50").unwrap().get_key("cpus").unwrap(), "1.5");
    assert_eq!(
        set("io-max", "rbps=5M,wbps=5M")
            .unwrap()
            .get_key("io-max")
            .unwrap(),
        "5M"
    );
    assert_eq!(
        set("net-rate", "100mbit")
            .unwrap()
            .get_key("net-rate")
            .unwrap(),
        "100mbit"
    );
    assert_eq!(
        set("net-rate", "8M").unwrap().get_key("net-rate").unwrap(),
        "8M"
    );
}

#[test]
fn bad_units_name_the_flag_and_the_forms() {
    assert_eq!(
        err("memory", "12XB"),
        "invalid --memory `12XB`: unknown unit (e.g. 512M, 2GiB, 1.5G; K/M/G/T are powers \
         of 1024)"
    );
    for key in [
        "memory",
        "memory-reserve",
        "swap",
        "disk",
        "net-rate",
        "io-max",
    ] {
        let e = err(key, "3 parsecs");
        assert!(
            e.starts_with(&format!("invalid --{key} `3 parsecs`: unknown unit")),
            "{e}"
        );
        assert!(e.contains("(e.g. "), "{e}");
    }
    let e = err("cpus", "two");
    assert!(
        e.starts_with("invalid --cpus `two`: not a number (e.g. 2, 0.5"),
        "{e}"
    );
    let e = err("pids", "10k");
    assert!(
        e.starts_with("invalid --pids `10k`: not a whole number (e.g. 512"),
        "{e}"
    );
    let e = err("cpuset", "0-x");
    assert!(
        e.contains("`x` is not a CPU number") && e.contains("e.g. 0-3,6"),
        "{e}"
    );
    let e = err("io-max", "rbps=1M,foo=2");
    assert!(
        e.contains("unknown field `foo`") && e.contains("rbps=50M"),
        "{e}"
    );
    let e = err("net-rate", "10xbit");
    assert!(e.contains("unknown unit") && e.contains("100mbit"), "{e}");
}

#[test]
fn zero_is_refused_except_for_swap() {
    for key in LIMIT_KEYS
        .iter()
        .filter(|k| **k != "swap" && **k != "cpuset")
    {
        let e = err(key, "0");
        assert!(
            e.starts_with(&format!("invalid --{key} `0`: zero is not a limit")),
            "{e}"
        );
        assert!(e.contains("`none`"), "{e}");
    }
    assert_eq!(set("swap", "0").unwrap().swap, Some(0));
    assert_eq!(
        set("cpus", "0.000").err().map(|e| e.contains("zero")),
        Some(true)
    );
    assert!(err("io-max", "rbps=0").contains("zero is not a limit"));
    // CPU 0 is a CPU, not a zero.
    assert_eq!(set("cpuset", "0").unwrap().cpuset.as_deref(), Some("0"));
}

#[test]
fn negative_is_refused() {
    for key in LIMIT_KEYS {
        let e = err(key, "-1");
        assert!(
            e.starts_with(&format!(
                "invalid --{key} `-1`: negative values are not limits"
            )),
            "{e}"
        );
    }
    assert!(err("cpus", " -0.5").contains("negative"));
}

#[test]
fn ranges_are_enforced() {
    let cases: &[(&str, &str, &str)] = &[
        ("cpus", "0.005", "below the minimum of 0.01"),
        ("cpus", "1024.001", "above the maximum of 1024"),
        ("cpus", "99999999999999999999", "above the maximum of 1024"),
        ("cpus", "1.2345", "more than 3 decimals"),
        ("cpus", "1.2.3", "not a number"),
        ("cpus", ".", "not a number"),
        ("cpus", "1e3", "not a number"),
        ("cpu-weight", "10001", "above the maximum of 10000"),
        ("io-weight", "1.5", "not a whole number"),
        ("cpuset", "4096", "above 4095"),
        ("cpuset", "3-1", "runs backwards"),
        ("cpuset", "1,,2", "is not a CPU number"),
        ("cpuset", "", "empty list"),
        ("memory", "5M", "below the minimum of 6 MiB"),
        ("memory", "", "no number"),
        ("pids", "7", "below the minimum of 8"),
        ("pids", "4194305", "above the kernel's most processes"),
        ("pids", "99999999999999999999999", "too large"),
        ("disk", "15M", "below the minimum of 16 MiB"),
        ("net-rate", "7kbit", "below the minimum of 8kbit"),
        ("net-rate", "999", "below the minimum of 8kbit"),
        ("io-max", "rbps=1M,rbps=2M", "given twice"),
        ("io-max", "rbps", "unknown unit"),
        ("io-max", "rbps=1M,wbps", "is not NAME=VALUE"),
        ("io-max", "riops=1K", "not a whole number"),
    ];
    for (key, value, why) in cases {
        let e = err(key, value);
        assert!(
            e.starts_with(&format!("invalid --{key} `{value}`: ")),
            "{e}"
        );
        assert!(e.contains(why), "{key}={value}: {e}");
    }
}

#[test]
fn unknown_keys_list_the_known_ones() {
    let e = err("ram", "1G");
    assert!(e.starts_with("unknown limit `ram`"), "{e}");
    assert!(e.contains("cpus, cpu-weight, cpuset, memory"), "{e}");
    assert_eq!(Limits::default().get_key("ram"), None);
}

#[test]
fn a_refused_value_changes_nothing() {
    let mut limits = set("memory", "1G").unwrap();
    let before = limits.clone();
    limits.set_key("memory", "12XB").unwrap_err();
    limits.set_key("io-max", "rbps=1M,bogus=2").unwrap_err();
    assert_eq!(limits, before);
}

#[test]
fn parse_cpus_reads_numbers() {
    assert_eq!(parse_cpus("0.5"), Ok(Cpus(500)));
    assert_eq!(parse_cpus(" 4 "), Ok(Cpus(4000)));
    let e = parse_cpus("lots").unwrap_err();
    assert!(
        e.starts_with("invalid CPU count `lots`: not a number (e.g. 2"),
        "{e}"
    );
    assert!(parse_cpus("0").unwrap_err().contains("zero"));
    assert!(parse_cpus("-2").unwrap_err().contains("negative"));
    // The wire form is a JSON number that goes through the same rules.
    let cpus: Cpus = serde_json::from_str("1.5").unwrap();
    assert_eq!(cpus, Cpus(1500));
    assert!(serde_json::from_str::<Cpus>("0.001").is_err());
    assert!(serde_json::from_str::<Cpus>("2000").is_err());
    assert_eq!(serde_json::to_string(&Cpus(250)).unwrap(), "0.25");
}

#[test]
fn overlaid_prefers_every_set_field_of_over() {
    let mut base = Limits::default();
    for (key, value) in sample() {
        base.set_key(key, value).unwrap();
    }
    assert_eq!(base.overlaid(&Limits::default()), base);
    assert_eq!(Limits::default().overlaid(&base), base);
    let mut over = Limits::default();
    for (key, value) in [
        ("cpus", "3"),
        ("cpu-weight", "9"),
        ("cpuset", "2"),
        ("memory", "2G"),
        ("memory-reserve", "1G"),
        ("swap", "1G"),
        ("pids", "9"),
        ("io-weight", "9"),
        ("io-max", "wbps=1M"),
        ("disk", "2G"),
        ("net-rate", "1mbit"),
    ] {
        over.set_key(key, value).unwrap();
        let result = base.overlaid(&over);
        assert_eq!(result.get_key(key).as_deref(), Some(value), "{key}");
    }
    assert_eq!(base.overlaid(&over), over);
    // io-max is taken whole, not merged field by field.
    assert_eq!(base.overlaid(&over).io_max.unwrap().rbps, None);
    // Only the fields over sets win.
    let one = set("memory", "64M").unwrap();
    let mixed = base.overlaid(&one);
    assert_eq!(mixed.memory, Some(64 * MIB));
    assert_eq!(mixed.cpus, base.cpus);
    assert_eq!(base.changed_keys(&mixed), vec!["memory"]);
}

#[test]
fn check_compares_reservation_and_limit() {
    let mut limits = set("memory", "512M").unwrap();
    limits.set_key("memory-reserve", "512M").unwrap();
    assert_eq!(limits.check(), Ok(()));
    limits.set_key("memory-reserve", "1G").unwrap();
    let e = limits.check().unwrap_err();
    assert!(
        e.contains("--memory-reserve (1 GiB) is above --memory (512 MiB)"),
        "{e}"
    );
    // A reservation without a limit is fine.
    assert_eq!(set("memory-reserve", "1G").unwrap().check(), Ok(()));
    assert_eq!(Limits::default().check(), Ok(()));
    for flavor in builtin_flavors() {
        assert_eq!(flavor.limits.check(), Ok(()), "{}", flavor.name);
    }
}

#[test]
fn check_refuses_out_of_range_json() {
    let limits: Limits = serde_json::from_str(r#"{"memory": 0}"#).unwrap();
    assert!(
        limits
            .check()
            .unwrap_err()
            .contains("invalid --memory `0`: zero")
    );
    let limits: Limits = serde_json::from_str(r#"{"pids": 3}"#).unwrap();
    assert!(
        limits
            .check()
            .unwrap_err()
            .contains("below the minimum of 8")
    );
    let limits: Limits = serde_json::from_str(r#"{"cpuset": "9999"}"#).unwrap();
    assert!(limits.check().unwrap_err().contains("above 4095"));
    let limits: Limits = serde_json::from_str(r#"{"io_max": {}}"#).unwrap();
    assert!(limits.check().unwrap_err().contains("--io-max: no limit"));
    let limits: Limits = serde_json::from_str(r#"{"net_rate": 10}"#).unwrap();
    assert!(limits.check().unwrap_err().contains("--net-rate"));
}

#[test]
fn changed_keys_in_order() {
    let a = Limits::default();
    let mut b = a.clone();
    b.set_key("net-rate", "1M").unwrap();
    b.set_key("cpus", "1").unwrap();
    b.set_key("swap", "0").unwrap();
    assert_eq!(a.changed_keys(&b), vec!["cpus", "swap", "net-rate"]);
    assert_eq!(b.changed_keys(&a), vec!["cpus", "swap", "net-rate"]);
    assert!(b.changed_keys(&b.clone()).is_empty());
    let mut c = b.clone();
    c.set_key("cpus", "1.000").unwrap();
    assert!(b.changed_keys(&c).is_empty());
}

#[test]
fn the_docs_table_of_builtin_flavors_is_what_builtin_flavors_holds() {
    let doc = include_str!("../../../../docs/resources.md");
    let key = |f: &FlavorInfo, k: &str| f.limits.get_key(k).unwrap_or_else(|| "-".into());
    let flavors = builtin_flavors();
    for f in &flavors {
        // Only these keys are in the table: a built-in flavor with another would need a column.
        let mut shown = f.limits.clone();
        for k in ["cpus", "memory", "memory-reserve", "pids"] {
            shown.set_key(k, "none").unwrap();
        }
        assert!(shown.is_empty(), "{} holds a limit the table lacks", f.name);
        let row = format!(
            "| {} | {} | {} | {} | {} | {} |",
            f.name,
            key(f, "cpus"),
            key(f, "memory"),
            key(f, "memory-reserve"),
            key(f, "pids"),
            f.description
        );
        assert!(
            doc.contains(&row),
            "docs/resources.md lacks the row `{row}`"
        );
    }
    let rows = doc
        .lines()
        .skip_while(|l| !l.starts_with("| flavor |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .count();
    assert_eq!(
        rows,
        flavors.len(),
        "the table has a row per built-in flavor"
    );
}

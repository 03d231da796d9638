//! Host discovery: what this host is and what is attached to it, published
//! as read-only host labels (`arch`, `cpus`, `memory`, `camera`, …) that
//! host selectors match.

use std::collections::BTreeMap;
use std::path::Path;

use outpost_api::quantity::Size;

/// Discovers the facts of this host. `data_dir` is where disk space is measured.
pub fn discover(data_dir: &Path, host: &str) -> BTreeMap<String, String> {
    discover_under(Path::new("/"), data_dir, host)
}

/// Discovery against a root directory (tests use a fake `/proc` and `/dev`).
pub fn discover_under(root: &Path, data_dir: &Path, host: &str) -> BTreeMap<String, String> {
    let mut facts = BTreeMap::new();
    facts.insert("hostname".to_string(), host.to_string());
    facts.insert("os".to_string(), std::env::consts::OS.to_string());
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    facts.insert("arch".to_string(), arch.to_string());
    if let Ok(kernel) = std::fs::read_to_string(root.join("proc/sys/kernel/osrelease")) {
        facts.insert("kernel".to_string(), kernel.trim().to_string());
    }
    let cpus = std::fs::read_to_string(root.join("proc/cpuinfo"))
        .map(|info| info.lines().filter(|l| l.starts_with("processor")).count())
        .unwrap_or(0);
    let cpus = if cpus > 0 {
        cpus
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    };
    facts.insert("cpus".to_string(), cpus.to_string());
    if let Some(memory) = meminfo_total(root) {
        facts.insert("memory".to_string(), round_size(memory));
    }
    if let Ok(stat) = nix::sys::statvfs::statvfs(data_dir) {
        // The field types differ between platforms (u32 on some 32-bit ones).
        #[allow(clippy::unnecessary_cast)]
        let bytes = stat.blocks() as u64 * stat.fragment_size() as u64;
        facts.insert("disk".to_string(), round_size(bytes));
    }
    let dev = root.join("dev");
    let count = |prefixes: &[&str]| {
        std::fs::read_dir(&dev)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .filter(|e| {
                        let name = e.file_name();
                        let name = name.to_string_lossy();
                        prefixes.iter().any(|p| {
                            name.strip_prefix(p)
                                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                        })
                    })
                    .count()
            })
            .unwrap_or(0)
    };
    for (label, prefixes) in [("camera", &["video"][..]), ("serial", &["ttyUSB", "ttyACM"][..])] {
        let n = count(prefixes);
        if n > 0 {
            facts.insert(label.to_string(), n.to_string());
        }
    }
    // GPUs: the NVIDIA driver lists each in /proc; device nodes otherwise.
    let driver_gpus = std::fs::read_dir(root.join("proc/driver/nvidia/gpus")).map_or(0, |e| e.count());
    let gpus = driver_gpus.max(count(&["nvidia"]));
    if gpus > 0 {
        facts.insert("gpu".to_string(), gpus.to_string());
    }
    facts
}

fn meminfo_total(root: &Path) -> Option<u64> {
    let info = std::fs::read_to_string(root.join("proc/meminfo")).ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Sizes rounded down to a whole Mi, so `memory >= 2Gi` compares sensibly
/// and the label does not change with every byte.
fn round_size(bytes: u64) -> String {
    let mi = bytes >> 20;
    if mi >= 1024 && mi.is_multiple_of(1024) {
        Size(bytes >> 30 << 30).to_string()
    } else {
        Size(mi << 20).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovers_from_proc_and_dev() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("proc/sys/kernel")).unwrap();
        std::fs::create_dir_all(root.path().join("dev")).unwrap();
        std::fs::write(root.path().join("proc/sys/kernel/osrelease"), "6.1.0-test\n").unwrap();
        std::fs::write(
            root.path().join("proc/cpuinfo"),
            "processor\t: 0\nx\nprocessor\t: 1\n",
        )
        .unwrap();
        std::fs::write(
            root.path().join("proc/meminfo"),
            "MemTotal:        8388608 kB\nMemFree: 1 kB\n",
        )
        .unwrap();
        for device in [
            "video0",
            "video1",
            "ttyUSB0",
            "ttyS0",
            "nvidia0",
            "nvidiactl",
            "videox",
        ] {
            std::fs::write(root.path().join("dev").join(device), "").unwrap();
        }
        let facts = discover_under(root.path(), root.path(), "till-1");
        assert_eq!(facts["kernel"], "6.1.0-test");
        assert_eq!(facts["cpus"], "2");
        assert_eq!(facts["memory"], "8Gi");
        assert_eq!(facts["camera"], "2");
        assert_eq!(facts["serial"], "1");
        assert_eq!(facts["gpu"], "1");
        // The driver's proc files count GPUs that have no device node yet.
        for bus in ["0000:01:00.0", "0000:02:00.0"] {
            std::fs::create_dir_all(root.path().join("proc/driver/nvidia/gpus").join(bus)).unwrap();
        }
        assert_eq!(discover_under(root.path(), root.path(), "till-1")["gpu"], "2");
        assert_eq!(facts["hostname"], "till-1");
        assert!(facts.contains_key("disk"));

        let bare = tempfile::tempdir().unwrap();
        let facts = discover_under(bare.path(), bare.path(), "h");
        assert!(!facts.contains_key("camera") && !facts.contains_key("gpu"));
    }

    #[test]
    fn sizes_round_to_whole_units() {
        assert_eq!(round_size(8 << 30), "8Gi");
        assert_eq!(round_size((8 << 30) - 4096), "8191Mi");
        assert_eq!(round_size(1536 << 20), "1536Mi");
    }
}

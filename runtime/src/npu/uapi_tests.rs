//! Layout and request-number checks against `../shared/docs/npu-driver.md` §1.1–1.2.
//!
//! `EXPECTED` is transcribed from the doc in its own `field@offset:size` notation, one struct per
//! line: `name size/align: field@off:size …`. `[]` marks a flexible array (size 0 in Rust).

use super::*;

const EXPECTED: &str = "\
amdxdna_qos_info 24/4: gops@0:4 fps@4:4 dma_bandwidth@8:4 latency@12:4 frame_exec_time@16:4 priority@20:4
amdxdna_drm_create_hwctx 56/8: ext@0:8 ext_flags@8:8 qos_p@16:8 umq_bo@24:4 log_buf_bo@28:4 max_opc@32:4 num_tiles@36:4 mem_size@40:4 umq_doorbell@44:4 handle@48:4 syncobj_handle@52:4
amdxdna_drm_destroy_hwctx 8/4: handle@0:4 pad@4:4
amdxdna_cu_config 8/4: cu_bo@0:4 cu_func@4:1 pad@5:3
amdxdna_hwctx_param_config_cu 8/4: num_cus@0:2 pad@2:6 cu_configs@8[]
amdxdna_drm_config_hwctx 24/8: handle@0:4 param_type@4:4 param_val@8:8 param_val_size@16:4 pad@20:4
amdxdna_drm_create_bo 32/8: flags@0:8 vaddr@8:8 size@16:8 type@24:4 handle@28:4
amdxdna_drm_get_bo_info 48/8: ext@0:8 ext_flags@8:8 handle@16:4 pad@20:4 map_offset@24:8 vaddr@32:8 xdna_addr@40:8
amdxdna_drm_sync_bo 24/8: handle@0:4 direction@4:4 offset@8:8 size@16:8
amdxdna_drm_exec_cmd 56/8: ext@0:8 ext_flags@8:8 hwctx@16:4 type@20:4 cmd_handles@24:8 args@32:8 cmd_count@40:4 arg_count@44:4 seq@48:8
amdxdna_drm_wait_cmd 16/8: hwctx@0:4 timeout@4:4 seq@8:8
amdxdna_drm_get_info 16/8: param@0:4 buffer_size@4:4 buffer@8:8
amdxdna_drm_set_state 16/8: param@0:4 buffer_size@4:4 buffer@8:8
amdxdna_drm_query_aie_version 8/4: major@0:4 minor@4:4
amdxdna_drm_query_aie_tile_metadata 16/2: row_count@0:2 row_start@2:2 dma_channel_count@4:2 lock_count@6:2 event_reg_count@8:2 pad@10:6
amdxdna_drm_query_aie_metadata 64/4: col_size@0:4 cols@4:2 rows@6:2 version@8:8 core@16:16 mem@32:16 shim@48:16
amdxdna_drm_query_clock 24/4: name@0:16 freq_mhz@16:4 pad@20:4
amdxdna_drm_query_clock_metadata 48/4: mp_npu_clock@0:24 h_clock@24:24
amdxdna_drm_query_firmware_version 16/4: major@0:4 minor@4:4 patch@8:4 build@12:4
amdxdna_drm_query_aie_status 16/8: buffer@0:8 buffer_size@8:4 cols_filled@12:4
amdxdna_drm_query_sensor 168/4: label@0:64 input@64:4 max@68:4 average@72:4 highest@76:4 status@80:64 units@144:16 unitm@160:1 type@161:1 pad@162:6
amdxdna_drm_query_hwctx 64/8: context_id@0:4 start_col@4:4 num_col@8:4 pad@12:4 pid@16:8 command_submissions@24:8 command_completions@32:8 migrations@40:8 preemptions@48:8 errors@56:8
amdxdna_drm_get_power_mode 8/1: power_mode@0:1 pad@1:7
amdxdna_drm_set_power_mode 8/1: power_mode@0:1 pad@1:7
amdxdna_drm_attribute_state 8/1: state@0:1 pad@1:7
amdxdna_drm_va_entry 16/8: vaddr@0:8 len@8:8
amdxdna_drm_va_tbl 8/8: dmabuf_fd@0:4 num_entries@4:4 va_entries@8[]
amdxdna_drm_get_array 24/8: param@0:4 element_size@4:4 num_element@8:4 pad@12:4 buffer@16:8
amdxdna_drm_hwctx_entry 144/8: context_id@0:4 start_col@4:4 num_col@8:4 hwctx_id@12:4 pid@16:8 command_submissions@24:8 command_completions@32:8 migrations@40:8 preemptions@48:8 errors@56:8 priority@64:8 heap_usage@72:8 suspensions@80:8 state@88:4 pasid@92:4 gops@96:4 fps@100:4 dma_bandwidth@104:4 latency@108:4 frame_exec_time@112:4 txn_op_idx@116:4 ctx_pc@120:4 fatal_error_type@124:4 fatal_error_exception_type@128:4 fatal_error_exception_pc@132:4 fatal_error_app_module@136:4 pad@140:4
amdxdna_drm_get_resource_info 40/8: npu_clk_max@0:8 npu_tops_max@8:8 npu_task_max@16:8 npu_tops_curr@24:8 npu_task_curr@32:8
amdxdna_async_error 24/8: err_code@0:8 ts_us@8:8 ex_err_code@16:8
amdxdna_drm_bo_usage 32/8: pid@0:8 total_usage@8:8 internal_usage@16:8 heap_usage@24:8
amdxdna_drm_query_telemetry_header 16/4: major@0:4 minor@4:4 type@8:4 map_num_elements@12:4 map@16[]
drm_version 64/8: version_major@0:4 version_minor@4:4 version_patchlevel@8:4 name_len@16:8 name@24:8 date_len@32:8 date@40:8 desc_len@48:8 desc@56:8
drm_gem_close 8/4: handle@0:4 pad@4:4
drm_prime_handle 12/4: handle@0:4 flags@4:4 fd@8:4
drm_syncobj_create 8/4: handle@0:4 flags@4:4
drm_syncobj_destroy 8/4: handle@0:4 pad@4:4
drm_syncobj_handle 16/4: handle@0:4 flags@4:4 fd@8:4 pad@12:4
drm_syncobj_wait 32/8: handles@0:8 timeout_nsec@8:8 count_handles@16:4 flags@20:4 first_signaled@24:4 pad@28:4
drm_syncobj_timeline_wait 40/8: handles@0:8 points@8:8 timeout_nsec@16:8 count_handles@24:4 flags@28:4 first_signaled@32:4 pad@36:4
drm_syncobj_timeline_array 24/8: handles@0:8 points@8:8 count_handles@16:4 flags@20:4
";

/// Request numbers as measured in the doc (§1.1; WAIT_CMD as the kernel-module header's `DRM_IOW`).
const EXPECTED_REQUESTS: &[(&str, u32)] = &[
    ("DRM_IOCTL_AMDXDNA_CREATE_HWCTX", 0xC0386440),
    ("DRM_IOCTL_AMDXDNA_DESTROY_HWCTX", 0xC0086441),
    ("DRM_IOCTL_AMDXDNA_CONFIG_HWCTX", 0xC0186442),
    ("DRM_IOCTL_AMDXDNA_CREATE_BO", 0xC0206443),
    ("DRM_IOCTL_AMDXDNA_GET_BO_INFO", 0xC0306444),
    ("DRM_IOCTL_AMDXDNA_SYNC_BO", 0xC0186445),
    ("DRM_IOCTL_AMDXDNA_EXEC_CMD", 0xC0386446),
    ("DRM_IOCTL_AMDXDNA_GET_INFO", 0xC0106447),
    ("DRM_IOCTL_AMDXDNA_SET_STATE", 0xC0106448),
    ("DRM_IOCTL_AMDXDNA_WAIT_CMD", 0x40106449),
    ("DRM_IOCTL_AMDXDNA_GET_ARRAY", 0xC018644A),
    ("DRM_IOCTL_VERSION", 0xC0406400),
    ("DRM_IOCTL_GEM_CLOSE", 0x40086409),
    ("DRM_IOCTL_PRIME_HANDLE_TO_FD", 0xC00C642D),
    ("DRM_IOCTL_PRIME_FD_TO_HANDLE", 0xC00C642E),
    ("DRM_IOCTL_SYNCOBJ_CREATE", 0xC00864BF),
    ("DRM_IOCTL_SYNCOBJ_DESTROY", 0xC00864C0),
    ("DRM_IOCTL_SYNCOBJ_HANDLE_TO_FD", 0xC01064C1),
    ("DRM_IOCTL_SYNCOBJ_FD_TO_HANDLE", 0xC01064C2),
    ("DRM_IOCTL_SYNCOBJ_WAIT", 0xC02064C3),
    ("DRM_IOCTL_SYNCOBJ_TIMELINE_WAIT", 0xC02864CA),
    ("DRM_IOCTL_SYNCOBJ_QUERY", 0xC01864CB),
    ("DRM_IOCTL_SYNCOBJ_TIMELINE_SIGNAL", 0xC01864CD),
];

fn parse_expected() -> Vec<StructLayout> {
    EXPECTED
        .lines()
        .map(|line| {
            let (head, fields) = line.split_once(": ").expect("line has ': '");
            let (name, sa) = head.split_once(' ').expect("name size/align");
            let (size, align) = sa.split_once('/').expect("size/align");
            let fields = fields
                .split(' ')
                .map(|f| {
                    let (fname, rest) = f.split_once('@').expect("field@offset");
                    let (offset, size) = match rest.strip_suffix("[]") {
                        Some(off) => (off, "0"),
                        None => rest.split_once(':').expect("offset:size"),
                    };
                    FieldLayout {
                        name: Box::leak(fname.to_string().into_boxed_str()),
                        offset: offset.parse().unwrap(),
                        size: size.parse().unwrap(),
                    }
                })
                .collect();
            StructLayout {
                name: Box::leak(name.to_string().into_boxed_str()),
                size: size.parse().unwrap(),
                align: align.parse().unwrap(),
                fields,
            }
        })
        .collect()
}

#[test]
fn every_struct_matches_the_doc() {
    let expected = parse_expected();
    let actual = struct_layouts();
    assert_eq!(expected.len(), actual.len(), "number of structs");
    for (e, a) in expected.iter().zip(&actual) {
        assert_eq!(e.name, a.name, "struct order/name");
        assert_eq!(
            (e.size, e.align),
            (a.size, a.align),
            "{} size/align",
            e.name
        );
        assert_eq!(e.fields, a.fields, "{} fields", e.name);
        // Fields must tile the struct without overlap, in order.
        let mut end = 0;
        for f in &a.fields {
            assert!(
                f.offset >= end,
                "{}.{} overlaps the previous field",
                a.name,
                f.name
            );
            end = f.offset + f.size;
        }
        assert!(end <= a.size, "{} fields run past its size", a.name);
    }
}

#[test]
fn every_request_number_matches_the_doc() {
    assert_eq!(REQUESTS.len(), EXPECTED_REQUESTS.len());
    for ((name, value), (ename, evalue)) in REQUESTS.iter().zip(EXPECTED_REQUESTS) {
        assert_eq!(name, ename);
        assert_eq!(
            *value, *evalue,
            "{name} = {value:#010X}, doc says {evalue:#010X}"
        );
    }
}

#[test]
fn our_encoding_agrees_with_rustix() {
    use rustix::ioctl::opcode;
    assert_eq!(
        DRM_IOCTL_AMDXDNA_EXEC_CMD as u64,
        opcode::read_write::<amdxdna_drm_exec_cmd>(b'd', 0x46) as u64
    );
    assert_eq!(
        DRM_IOCTL_GEM_CLOSE as u64,
        opcode::write::<drm_gem_close>(b'd', 0x09) as u64
    );
    assert_eq!(
        DRM_IOCTL_SYNCOBJ_TIMELINE_WAIT as u64,
        opcode::read_write::<drm_syncobj_timeline_wait>(b'd', 0xCA) as u64
    );
}

#[test]
fn table_prints_in_the_doc_format() {
    let table = layout_table();
    assert!(
        table.starts_with("amdxdna_qos_info 24\ngops 0 4\n"),
        "{}",
        &table[..60]
    );
    assert!(table.contains(
        "\namdxdna_drm_create_bo 32\nflags 0 8\nvaddr 8 8\nsize 16 8\ntype 24 4\nhandle 28 4\n"
    ));
    assert!(table.contains("\nDRM_IOCTL_AMDXDNA_EXEC_CMD = 0xC0386446\n"));
    assert!(table.ends_with("DRM_IOCTL_SYNCOBJ_TIMELINE_SIGNAL = 0xC01864CD\n"));
    let struct_lines = struct_layouts()
        .iter()
        .map(|s| 1 + s.fields.len())
        .sum::<usize>();
    assert_eq!(table.lines().count(), struct_lines + REQUESTS.len());
}

/// Compile the generic-DRM part of [`c_program`] against libdrm's `drm.h` when this machine
/// has it (Debian: libdrm-dev) and a C compiler, and compare its output with our table. Skipped,
/// with the reason printed, when either is missing.
#[test]
fn generic_drm_structs_match_the_system_drm_header() {
    use std::path::Path;
    use std::process::Command;
    let include = Path::new("/usr/include/libdrm");
    if !include.join("drm.h").exists() {
        eprintln!(
            "skipped: {}/drm.h absent (install libdrm-dev)",
            include.display()
        );
        return;
    }
    let dir = std::env::temp_dir().join(format!("amanuensis-uapi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("t.c");
    let exe = dir.join("t");
    std::fs::write(&src, c_program(TablePart::GenericDrm)).unwrap();
    let cc = Command::new("cc")
        .arg("-I")
        .arg(include)
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .output();
    let Ok(cc) = cc else {
        eprintln!("skipped: no C compiler (cc)");
        return;
    };
    assert!(
        cc.status.success(),
        "cc failed: {}",
        String::from_utf8_lossy(&cc.stderr)
    );
    let out = Command::new(&exe).output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        layout_table_part(TablePart::GenericDrm)
    );
}

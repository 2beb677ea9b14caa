//! The emulated driver's rules, exercised through raw [`Driver`] calls (the safe owners are
//! tested end to end in `npu/tests.rs`).

use super::*;
use crate::npu::clock::{deadline_after, monotonic_ns};
use crate::npu::ert::StartCu;
use crate::npu::uapi::{amdxdna_cu_config, AMDXDNA_INVALID_ADDR};

const PDI: &[u8] = b"EMU-RAW-PDI";

/// Heap mapped 64 MiB aligned, a configured context, a CMD BO with a START_CU packet.
fn setup(emu: &EmuDriver) -> (u32, u32, u32, MappedRange) {
    let heap = emu.create_bo(BoType::DevHeap, HEAP_MAX).unwrap();
    let info = emu.bo_info(heap).unwrap();
    assert_eq!(info.xdna_addr, HEAP_DEVICE_BASE);
    let heap_map = emu
        .mmap(info.map_offset, HEAP_MAX as usize, HEAP_ALIGN)
        .unwrap();
    assert_eq!(heap_map.addr() % HEAP_ALIGN, 0);
    let pdi = emu.create_bo(BoType::Dev, PDI.len() as u64).unwrap();
    let off = (emu.bo_info(pdi).unwrap().xdna_addr - HEAP_DEVICE_BASE) as usize;
    // SAFETY: test-only write of the PDI into the heap mapping we own.
    unsafe { heap_map.bytes_mut(off, PDI.len()) }.copy_from_slice(PDI);
    // SAFETY: the PDI bytes lie in the live heap mapping; the firmware reads device memory.
    unsafe { emu.cache_flush(heap_map.ptr().as_ptr().add(off), PDI.len()) };
    let (ctx, sync) = emu.create_hwctx(&[0; 32], 2048, 4).unwrap();
    emu.config_cu(
        ctx,
        &[amdxdna_cu_config {
            cu_bo: pdi,
            cu_func: 0,
            pad: [0; 3],
        }],
    )
    .unwrap();
    let cmd = emu.create_bo(BoType::Cmd, 4096).unwrap();
    let map = emu
        .mmap(emu.bo_info(cmd).unwrap().map_offset, 4096, 0)
        .unwrap();
    let regmap = [3, 0, 0, 0, 0]; // opcode 3, no instruction BO: the command ends in ERROR
    let p = StartCu {
        cu_mask: 1,
        regmap: &regmap,
    };
    // SAFETY: test-only view of the CMD BO mapping; u32-aligned (page-aligned mapping).
    let words = unsafe { std::slice::from_raw_parts_mut(map.ptr().as_ptr().cast::<u32>(), 1024) };
    p.write(words).unwrap();
    (ctx, sync, cmd, map)
}

#[test]
fn device_memory_is_not_coherent() {
    let emu = emu_with_kernel();
    let bo = emu.create_bo(BoType::Share, 4096).unwrap();
    let map = emu
        .mmap(emu.bo_info(bo).unwrap().map_offset, 4096, 0)
        .unwrap();
    let host = map.ptr().as_ptr();
    let dev = || {
        let s = emu.lock();
        let (p, len, h) = s.memory.resolve(map.addr() as u64).unwrap();
        assert_eq!((len, h), (4096, bo));
        // SAFETY: test-only read of the BO's device copy.
        unsafe { std::slice::from_raw_parts(p, 4096).to_vec() }
    };
    // SAFETY: test-only writes to our own mapping.
    unsafe { host.write_bytes(0xAB, 4096) };
    assert!(
        dev().iter().all(|&b| b == 0),
        "device sees nothing before a flush"
    );
    // SAFETY: the range is our live mapping.
    unsafe { emu.cache_flush(host.add(64), 64) };
    let d = dev();
    assert!(
        d[64..128].iter().all(|&b| b == 0xAB),
        "the flushed line reached the device"
    );
    assert!(d[..64].iter().all(|&b| b == 0) && d[128..].iter().all(|&b| b == 0));
    // A device write is invisible to the host until the host flushes (invalidates).
    {
        let s = emu.lock();
        let (p, _, _) = s.memory.resolve(map.addr() as u64 + 1000).unwrap();
        // SAFETY: test-only write into the device copy, in bounds.
        unsafe { p.write_bytes(0x11, 8) };
    }
    // SAFETY: test-only read of our mapping.
    assert_eq!(unsafe { host.add(1000).read() }, 0xAB);
    // SAFETY: the range is our live mapping.
    unsafe { emu.cache_flush(host.add(1000), 8) };
    // The line 960..1024 was CPU-dirty (0xAB, never flushed): clflush wrote it back over the
    // device's bytes first, exactly the F3 hazard.
    // SAFETY: test-only read of our mapping.
    assert_eq!(unsafe { host.add(1000).read() }, 0xAB);
    // A clean line shows the device write after the flush.
    {
        let s = emu.lock();
        let (p, _, _) = s.memory.resolve(map.addr() as u64 + 64).unwrap();
        // SAFETY: test-only write into the device copy, in bounds.
        unsafe { p.write_bytes(0x22, 4) };
    }
    // SAFETY: the range is our live mapping.
    unsafe { emu.cache_flush(host.add(64), 4) };
    // SAFETY: test-only read of our mapping.
    assert_eq!(unsafe { host.add(64).read() }, 0x22);
    emu.munmap(&map).unwrap();
    emu.gem_close(bo).unwrap();
}

/// A clean line the device writes reads [`STALE`] until a flush; a store into it of the bytes
/// the host held before (which the flush could not tell from no store) reaches the device.
#[test]
fn a_line_the_device_wrote_is_stale_and_a_store_into_it_counts() {
    let emu = emu_with_kernel();
    let bo = emu.create_bo(BoType::Share, 4096).unwrap();
    let map = emu
        .mmap(emu.bo_info(bo).unwrap().map_offset, 4096, 0)
        .unwrap();
    let host = map.ptr().as_ptr();
    let addr = map.addr() as u64;
    let device_write = |off: u64, byte: u8, len: usize| {
        let s = emu.lock();
        let (p, _, _) = s.memory.resolve(addr + off).unwrap();
        // SAFETY: test-only write into the device copy, in bounds.
        unsafe { p.write_bytes(byte, len) };
        s.memory.device_wrote(addr + off, len);
    };
    let device_byte = |off: u64| {
        let s = emu.lock();
        let (p, _, _) = s.memory.resolve(addr + off).unwrap();
        // SAFETY: test-only read of the device copy, in bounds.
        unsafe { p.read() }
    };
    // SAFETY (this test's raw accesses): writes, reads and flushes of our own live mapping.
    unsafe {
        host.write_bytes(0xAB, 4096);
        emu.cache_flush(host, 4096);
    }
    device_write(64, 0x11, 8);
    // The whole line is stale on the host; its neighbours are not.
    assert_eq!(unsafe { host.add(64).read() }, STALE);
    assert_eq!(unsafe { host.add(127).read() }, STALE);
    assert_eq!(unsafe { host.add(128).read() }, 0xAB);
    // A flush (invalidation) shows the device's bytes.
    unsafe { emu.cache_flush(host.add(64), 8) };
    assert_eq!(unsafe { host.add(64).read() }, 0x11);
    assert_eq!(unsafe { host.add(72).read() }, 0xAB);
    // The device writes the line again; the host stores what it held before, then flushes.
    device_write(64, 0x22, 8);
    unsafe {
        host.add(64).write_bytes(0x11, 8);
        emu.cache_flush(host.add(64), 8);
    }
    assert_eq!(device_byte(64), 0x11, "the host's store reached the device");
    // The rest of the line was stale when the host stored: written back as such (F3).
    assert_eq!(device_byte(72), STALE);
    // A line the host holds dirty keeps the host's bytes (its flush writes them back).
    unsafe { host.add(256).write_bytes(0x33, 4) };
    device_write(256, 0x44, 4);
    assert_eq!(unsafe { host.add(256).read() }, 0x33);
    unsafe { emu.cache_flush(host.add(256), 4) };
    assert_eq!(device_byte(256), 0x33);
    emu.munmap(&map).unwrap();
    emu.gem_close(bo).unwrap();
}

fn emu_with_kernel() -> EmuDriver {
    let emu = EmuDriver::new(EmuConfig::default());
    emu.register_kernel(PDI, |_| Ok(()));
    emu
}

#[test]
fn heap_rules() {
    let emu = emu_with_kernel();
    assert_eq!(
        emu.create_bo(BoType::DevHeap, HEAP_MAX + 1),
        Err(Errno::INVAL)
    );
    assert_eq!(emu.create_bo(BoType::Share, 0), Err(Errno::INVAL));
    let heap = emu.create_bo(BoType::DevHeap, HEAP_MAX).unwrap();
    assert_eq!(
        emu.create_bo(BoType::DevHeap, HEAP_MAX),
        Err(Errno::BUSY),
        "one heap per client"
    );
    assert_eq!(
        emu.create_bo(BoType::Dev, 4096),
        Err(emu.config().profile.unmapped_heap_errno()),
        "heap not mapped yet"
    );
    assert_eq!(
        emu.create_hwctx(&[0; 32], 0, 4),
        Err(Errno::INVAL),
        "CREATE_HWCTX needs the heap mapped"
    );
    let info = emu.bo_info(heap).unwrap();
    let map = emu
        .mmap(info.map_offset, HEAP_MAX as usize, HEAP_ALIGN)
        .unwrap();
    let dev = emu.create_bo(BoType::Dev, 1).unwrap();
    let d = emu.bo_info(dev).unwrap();
    assert_eq!(
        d.map_offset, AMDXDNA_INVALID_ADDR,
        "DEV BOs are not mmapped"
    );
    assert_eq!(d.xdna_addr % DEV_BO_ALIGN, 0);
    assert_eq!(
        emu.gem_close(heap),
        Err(Errno::BUSY),
        "heap outlives its DEV BOs here"
    );
    emu.gem_close(dev).unwrap();
    assert_eq!(emu.gem_close(dev), Err(Errno::NOENT));
    emu.munmap(&map).unwrap();
    emu.gem_close(heap).unwrap();
    assert_eq!(emu.stats().live_bos, 0);
}

#[test]
fn share_bos_have_no_device_address_until_used_by_mapping() {
    let emu = emu_with_kernel();
    let bo = emu.create_bo(BoType::Share, 100).unwrap();
    let before = emu.bo_info(bo).unwrap();
    assert_eq!((before.vaddr, before.xdna_addr), (0, AMDXDNA_INVALID_ADDR));
    let map = emu.mmap(before.map_offset, 100, 0).unwrap();
    assert_eq!(emu.bo_info(bo).unwrap().vaddr, map.addr() as u64);
    // GEM keeps a closed BO alive while it is mapped.
    emu.gem_close(bo).unwrap();
    assert_eq!(emu.stats().live_bos, 0);
    assert_eq!(emu.stats().mapped_bos, 1);
    emu.munmap(&map).unwrap();
    assert_eq!(emu.stats().mapped_bos, 0);
}

#[test]
fn context_and_cu_rules() {
    let emu = emu_with_kernel();
    assert_eq!(
        emu.create_hwctx(&[0; 32], 0, 4),
        Err(Errno::NOENT),
        "no heap"
    );
    let (ctx, _, cmd, _map) = setup(&emu);
    let cu = amdxdna_cu_config {
        cu_bo: cmd,
        cu_func: 0,
        pad: [0; 3],
    };
    assert_eq!(
        emu.config_cu(ctx, &[cu]),
        Err(Errno::INVAL),
        "re-config refused"
    );
    let (ctx2, _) = emu.create_hwctx(&[0; 32], 0, 8).unwrap();
    assert_eq!(
        emu.config_cu(ctx2, &[cu]),
        Err(Errno::INVAL),
        "CU BO must be a DEV BO"
    );
    assert_eq!(
        emu.config_cu(ctx2, &[]),
        Err(Errno::INVAL),
        "at least one CU"
    );
    assert_eq!(
        emu.create_hwctx(&[0; 32], 0, 6),
        Err(Errno::INVAL),
        "num_tiles not a multiple of core rows"
    );
    assert_eq!(
        emu.create_hwctx(&[0; 32], 0, 24),
        Err(Errno::INVAL),
        "6 columns on a 5-column device"
    );
    assert_eq!(
        emu.exec_cmd(ctx2, cmd, &[]),
        Err(Errno::INVAL),
        "unconfigured context"
    );
    assert_eq!(
        emu.exec_cmd(ctx, cmd, &vec![cmd; 4096]),
        Err(Errno::INVAL),
        "arg_count ≤ 4095"
    );
}

#[test]
fn timeline_points_and_deadlines() {
    let emu = emu_with_kernel();
    let (ctx, sync, cmd, _map) = setup(&emu);
    // WAIT_FOR_SUBMIT on a point nobody submitted: waits until the deadline.
    let t0 = monotonic_ns();
    assert_eq!(
        emu.timeline_wait(sync, 5, deadline_after(Duration::from_millis(20))),
        Err(Errno::TIME)
    );
    assert!(monotonic_ns() - t0 >= 20_000_000);
    // Long enough that the 1 ms wait below ends before the job even on a loaded machine (at
    // 10 ms a descheduled test thread once found it done).
    emu.set_latency(Duration::from_millis(200));
    assert_eq!(
        emu.exec_cmd(ctx, cmd, &[]).unwrap(),
        0,
        "seq starts at 0 per context"
    );
    assert_eq!(
        emu.timeline_wait(sync, 0, monotonic_ns() + 1_000_000),
        Err(Errno::TIME)
    );
    emu.timeline_wait(sync, 0, deadline_after(Duration::from_secs(1)))
        .unwrap();
    // A signalled point succeeds even with a deadline in the past (the kernel checks first).
    emu.timeline_wait(sync, 0, 0).unwrap();
    assert_eq!(
        emu.timeline_wait(999, 0, i64::MAX),
        Err(Errno::NOENT),
        "unknown syncobj (drm_syncobj_array_find)"
    );
    emu.syncobj_destroy(sync).unwrap();
    emu.destroy_hwctx(ctx).unwrap();
    let order: Vec<&str> = emu.ops().iter().rev().take(2).map(|(o, _)| *o).collect();
    assert_eq!(order, ["DESTROY_HWCTX", "SYNCOBJ_DESTROY"]);
}

#[test]
fn fault_injection_counts_calls() {
    let emu = emu_with_kernel();
    emu.fail_nth_call(2, Errno::IO);
    emu.version().unwrap();
    assert_eq!(emu.query_aie_version(), Err(Errno::IO));
    emu.query_aie_version().unwrap();
    emu.fail_next("GEM_CLOSE", Errno::FAULT);
    emu.version().unwrap();
    assert_eq!(emu.gem_close(1), Err(Errno::FAULT));
    assert_eq!(emu.gem_close(1), Err(Errno::NOENT), "the fault is consumed");
}

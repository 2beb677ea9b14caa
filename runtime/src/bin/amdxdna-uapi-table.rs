//! Print the amdxdna uAPI layout table (struct sizes, field offsets and sizes, request numbers)
//! as the Rust definitions lay it out; with `--c`, print a C program that prints the same table
//! from the system headers, for diffing on a machine that has them.

fn main() {
    use amanuensis_runtime::npu::uapi;
    match std::env::args().nth(1).as_deref() {
        None => print!("{}", uapi::layout_table()),
        Some("--c") => print!("{}", uapi::c_program(uapi::TablePart::All)),
        Some(other) => {
            eprintln!("usage: amdxdna-uapi-table [--c]   (unknown argument {other:?})");
            std::process::exit(2);
        }
    }
}

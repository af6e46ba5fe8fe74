//! The base64 engine of the RPC translations' hot paths (Connect JSON `bytes` fields,
//! gRPC-Web text bodies): the `base64` crate's SIMD engine where the target has one
//! (AVX2 detected at run time on x86-64, NEON on AArch64), its scalar engine elsewhere.
//! Standard alphabet, padded: the same bytes either way.

use std::sync::LazyLock;

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
type Fast = base64::engine::Simd;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
type Fast = base64::engine::GeneralPurpose;

/// Standard base64 with padding, as fast as this CPU encodes it.
pub static STANDARD: LazyLock<Fast> = LazyLock::new(|| {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    return base64::engine::Simd::standard(base64::engine::general_purpose::PAD);
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    return base64::engine::general_purpose::STANDARD;
});

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    #[test]
    fn encodes_and_decodes_as_the_scalar_engine_does() {
        let scalar = base64::engine::general_purpose::STANDARD;
        for len in (0..200).chain([1023, 1024, 1025, 16 * 1024 + 7]) {
            let data: Vec<u8> = (0..len).map(|i| (i * 131 % 251) as u8).collect();
            let fast = super::STANDARD.encode(&data);
            assert_eq!(fast, scalar.encode(&data), "length {len}");
            assert_eq!(super::STANDARD.decode(&fast).expect("decode"), data);
        }
        assert!(super::STANDARD.decode("AA=A").is_err());
        assert!(super::STANDARD.decode("A").is_err());
    }
}

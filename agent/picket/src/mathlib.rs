//! `log` and `pow`, the only two functions of glibc's libm the agent calls (rsigma-eval sizes its
//! Bloom filters and ranks fields with them, once, as rules load). Defined here, in Rust (the
//! `libm` crate: musl's algorithms), the linker has nothing left to take from libm.so and, with
//! `--as-needed`, does not list it: the agent no longer maps it, ~310 KiB resident
//! (docs/BENCHMARKS.md). An executable's own definitions are the ones every caller in the process
//! binds to, libraries loaded later included; these are exact to the last bit or two, as glibc's.
//! glibc builds only: musl builds link their libc, libm included, statically.

#![allow(unsafe_code)]

/// Natural logarithm, C's `log`.
#[unsafe(no_mangle)]
pub extern "C" fn log(x: f64) -> f64 {
    libm::log(x)
}

/// `x` to the power `y`, C's `pow`.
#[unsafe(no_mangle)]
pub extern "C" fn pow(x: f64, y: f64) -> f64 {
    libm::pow(x, y)
}

#[cfg(test)]
mod tests {
    // Against constants: std's `ln`/`powf` would call these very functions in this binary.
    #[test]
    fn match_the_correctly_rounded_values() {
        let logs = [
            (2.0, std::f64::consts::LN_2),
            (0.5, -std::f64::consts::LN_2),
            (10.0, std::f64::consts::LN_10),
            (1e300, 690.775_527_898_213_7),
            (1.0, 0.0),
        ];
        for (x, want) in logs {
            assert_eq!(super::log(x), want, "log({x})");
        }
        assert!(super::log(0.0) == f64::NEG_INFINITY && super::log(-1.0).is_nan());
        assert_eq!(super::pow(2.0, 10.0), 1024.0);
        assert_eq!(super::pow(2.0, 0.5), std::f64::consts::SQRT_2);
        assert_eq!(super::pow(10.0, -2.0), 0.01);
    }
}

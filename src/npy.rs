//! NumPy's `.npy` files of float32, C order: what `fewstep sample --start` reads (another tool's
//! starting noise, e.g. `np.save("noise.npy", torch.randn(4, 3, 32, 32).numpy())`). A leaf module.

/// A float32 array read from a `.npy` file.
#[derive(Clone, Debug, PartialEq)]
pub struct Array {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Parses `.npy` bytes holding little-endian float32 in C order; any other layout is an error
/// that says what the file holds.
pub fn parse(bytes: &[u8]) -> Result<Array, String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not a .npy file (no \\x93NUMPY magic)".into());
    }
    let (header_len, start): (usize, usize) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => {
            return Err(format!(
                ".npy format version {v} is not one fewstep reads (1 to 3)"
            ))
        }
    };
    let header = bytes
        .get(start..start.saturating_add(header_len))
        .ok_or("the .npy header is cut short")?;
    let header = std::str::from_utf8(header).map_err(|_| "the .npy header is not text")?;
    let field = |key: &str| -> Option<&str> {
        let at = header.find(&format!("'{key}'"))? + key.len() + 2;
        let rest = header[at..].trim_start().strip_prefix(':')?.trim_start();
        Some(rest)
    };
    let descr = field("descr").ok_or("the .npy header has no 'descr'")?;
    if !(descr.starts_with("'<f4'") || descr.starts_with("'float32'")) {
        let shown: String = descr.chars().take_while(|&c| c != ',').collect();
        return Err(format!(
            "the array's dtype is {shown}; fewstep reads float32 ('<f4'): save it with \
             .astype(np.float32)"
        ));
    }
    if field("fortran_order").is_some_and(|v| v.starts_with("True")) {
        return Err(
            "the array is in Fortran order; save it in C order (np.ascontiguousarray)".into(),
        );
    }
    let shape_text = field("shape").ok_or("the .npy header has no 'shape'")?;
    let inner = shape_text
        .strip_prefix('(')
        .and_then(|r| r.split(')').next())
        .ok_or("the .npy shape is not a tuple")?;
    let shape: Vec<usize> = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| format!("the .npy shape ({inner}) is not sizes"))
        })
        .collect::<Result<_, _>>()?;
    let count = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or("the .npy shape is too large")?;
    let body = &bytes[start + header_len..];
    if body.len() != count.saturating_mul(4) {
        return Err(format!(
            "the .npy data holds {} bytes, but shape {shape:?} of float32 needs {}",
            body.len(),
            count.saturating_mul(4)
        ));
    }
    let data = body
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok(Array { shape, data })
}

/// The `.npy` bytes of a float32 array in C order (format 1.0).
pub fn encode(shape: &[usize], data: &[f32]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_text = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_text}, }}");
    // Padded with spaces and a newline so that the data starts at a multiple of 64.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    for v in data {
        out.extend(v.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_then_parse_is_the_identity_and_bad_files_are_named() {
        let data: Vec<f32> = (0..24).map(|i| i as f32 * 0.5 - 3.0).collect();
        let a = parse(&encode(&[2, 3, 2, 2], &data)).unwrap();
        assert_eq!(a.shape, [2, 3, 2, 2]);
        assert_eq!(a.data, data);
        let mut f64_file = encode(&[2], &[1.0, 2.0]);
        let at = f64_file.windows(3).position(|w| w == b"<f4").unwrap();
        f64_file[at + 2] = b'8';
        assert!(parse(&f64_file).unwrap_err().contains("'<f8'"));
        assert!(parse(b"hello world").unwrap_err().contains("magic"));
        let cut = encode(&[4], &[1.0; 4]);
        assert!(parse(&cut[..cut.len() - 1])
            .unwrap_err()
            .contains("needs 16"));
    }
}

#![no_main]
//! KMS's `CiphertextForRecipient` (CMS EnvelopedData, BER or DER) as the enclave reads it:
//! any bytes parse to an envelope or an error, never a panic. CI seeds it with the real AWS
//! answers beside the project (`nitro-vectors/kms-cms/input_ber*.bin`).

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = keyserver::kms::cms::parse(data);
});

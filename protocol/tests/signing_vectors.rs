//! Server-held keys sign as the standards say: published vectors (RFC 8032 §7.1 for Ed25519;
//! the RFC 6979 secp256k1 vectors of btcd, Trezor and bitcoinjs; EIP-155 for Keccak-256), and
//! every signature checked by an independent implementation (ring's Ed25519, libsecp256k1
//! through the `secp256k1` crate), never only by the code that made it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use keyserver_protocol::signing::{
    Algorithm, MessageHash, PrivateKey, SignOptions, message_digest, verify,
};
use rand::{RngCore, SeedableRng};

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

/// RFC 8032 §7.1 TEST 1–3: secret key, public key, message, signature.
const ED25519: [(&str, &str, &str, &str); 3] = [
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
    (
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
];

/// RFC 6979 over secp256k1 with SHA-256, low `s`: private key, message, r, s. From btcd's
/// `btcec/ecdsa/signature_test.go` (`TestRFC6979`, which says they match Trezor's and
/// CoreBitcoin's) and bitcoinjs-lib's `test/fixtures/ecdsa.json`.
const SECP256K1_SHA256: [(&str, &str, &str, &str); 7] = [
    (
        "0000000000000000000000000000000000000000000000000000000000000001",
        "Satoshi Nakamoto",
        "934b1ea10a4b3c1757e2b0c017d0b6143ce3c9a7e6a4a49860d7a6ab210ee3d8",
        "2442ce9d2b916064108014783e923ec36b49743e2ffa1c4496f01a512aafd9e5",
    ),
    (
        "0000000000000000000000000000000000000000000000000000000000000001",
        "All those moments will be lost in time, like tears in rain. Time to die...",
        "8600dbd41e348fe5c9465ab92d23e3db8b98b873beecd930736488696438cb6b",
        "547fe64427496db33bf66019dacbf0039c04199abb0122918601db38a72cfc21",
    ),
    (
        "fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364140",
        "Satoshi Nakamoto",
        "fd567d121db66e382991534ada77a6bd3106f0a1098c231e47993447cd6af2d0",
        "6b39cd0eb1bc8603e159ef5c20a5c8ad685a45b06ce9bebed3f153d10d93bed5",
    ),
    (
        "f8b8af8ce3c7cca5e300d33939540c10d45ce001b8f252bfbc57ba0342904181",
        "Alan Turing",
        "7063ae83e7f62bbb171798131b4a0564b956930092b33b07b395615d9ec7e15c",
        "58dfcc1e00a35e1572f366ffe34ba0fc47db1e7189759b9fb233c5b05ab388ea",
    ),
    (
        "e91671c46231f833a6406ccbea0e3e392c76c167bac1cb013f6f1013980455c2",
        "There is a computer disease that anybody who works with computers knows about. It's a very serious disease and it interferes completely with the work. The trouble with computers is that you 'play' with them!",
        "b552edd27580141f3b2a5463048cb7cd3e047b97c9f98076c32dbdf85a68718b",
        "279fa72dd19bfae05577e06c7c0c1900c371fcd5893f7e1d56a37d30174671f6",
    ),
    (
        "cca9fbcc1b41e5a95d369eaa6ddcff73b61a4efaa279cfc6567e8daa39cbaf50",
        "sample",
        "af340daf02cc15c8d5d08d7735dfe6b98a474ed373bdb5fbecf7571be52b3842",
        "5009fb27f37034a9b24b707b7c6b79ca23ddef9e25f7282e8a797efe53a8f124",
    ),
    (
        "69ec59eaa1f4f2e36b639716b7c30ca86d9a5375c7b38d8918bd9c0ebc80ba64",
        "Computer science is no more about computers than astronomy is about telescopes.",
        "7186363571d65e084e7f02b0b77c3ec44fb1b257dee26274c38c928986fea45d",
        "0de0b38e06807e46bda1f1e293f4f6323e854c86d58abdd00c46c16441085df6",
    ),
];

/// EIP-155's example transaction: private key, signing data (RLP), its Keccak-256, r, s, v.
const EIP155: (&str, &str, &str, &str, &str, u8) = (
    "4646464646464646464646464646464646464646464646464646464646464646",
    "ec098504a817c800825208943535353535353535353535353535353535353535880de0b6b3a764000080018080",
    "daf5a779ae972f972197303d7b574746c7ef83eadac0f2791ad23db92e4c8e53",
    "28ef61340bd939bc2195fe537567866003e1a15d3c71ff63e1590620aa636276",
    "67cbe9d8997f761aecb703304b3800ccf555c9f3dc64214b297fb1966a3b6d83",
    0,
);

fn ring_verifies(public: &[u8], message: &[u8], signature: &[u8]) -> bool {
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public)
        .verify(message, signature)
        .is_ok()
}

/// libsecp256k1's view: `signature` (r || s, optionally || v) over `digest` by `public`;
/// with a recovery id, the key it recovers.
fn libsecp256k1_verifies(public: &[u8], digest: [u8; 32], signature: &[u8]) -> bool {
    use secp256k1::{Message, PublicKey, Secp256k1, ecdsa};
    let secp = Secp256k1::verification_only();
    let msg = Message::from_digest(digest);
    let public = PublicKey::from_slice(public).unwrap();
    let compact = ecdsa::Signature::from_compact(&signature[..64]).unwrap();
    // libsecp256k1 itself refuses a high s.
    if secp.verify_ecdsa(&msg, &compact, &public).is_err() {
        return false;
    }
    match signature.get(64) {
        None => true,
        Some(&v) => {
            let id = ecdsa::RecoveryId::try_from(i32::from(v)).unwrap();
            let rec = ecdsa::RecoverableSignature::from_compact(&signature[..64], id).unwrap();
            secp.recover_ecdsa(&msg, &rec).is_ok_and(|k| k == public)
        }
    }
}

#[test]
fn ed25519_signs_the_rfc_8032_vectors() {
    for (sk, pk, msg, sig) in ED25519 {
        let key = PrivateKey::from_bytes(Algorithm::Ed25519, &h(sk)).unwrap();
        assert_eq!(key.public_key().unwrap(), h(pk));
        let signature = key.sign(&h(msg), SignOptions::default()).unwrap();
        assert_eq!(hex::encode(&signature), sig);
        verify(
            Algorithm::Ed25519,
            &h(pk),
            &h(msg),
            SignOptions::default(),
            &signature,
        )
        .unwrap();
        assert!(ring_verifies(&h(pk), &h(msg), &signature));
    }
}

#[test]
fn secp256k1_signs_the_rfc_6979_vectors_with_sha256() {
    for (sk, msg, r, s) in SECP256K1_SHA256 {
        let key = PrivateKey::from_bytes(Algorithm::Secp256k1, &h(sk)).unwrap();
        let public = key.public_key().unwrap();
        for recoverable in [false, true] {
            let options = SignOptions {
                hash: None,
                recoverable,
            };
            let signature = key.sign(msg.as_bytes(), options).unwrap();
            assert_eq!(hex::encode(&signature[..32]), r, "{msg}");
            assert_eq!(hex::encode(&signature[32..64]), s, "{msg}");
            assert_eq!(signature.len(), if recoverable { 65 } else { 64 });
            verify(
                Algorithm::Secp256k1,
                &public,
                msg.as_bytes(),
                options,
                &signature,
            )
            .unwrap();
            let digest = MessageHash::Sha256.digest(msg.as_bytes()).unwrap();
            assert!(libsecp256k1_verifies(&public, digest, &signature), "{msg}");
        }
    }
}

#[test]
fn secp256k1_signs_ethereums_eip_155_example_with_keccak256() {
    let (sk, data, hash, r, s, v) = EIP155;
    assert_eq!(
        MessageHash::Keccak256.digest(&h(data)).unwrap().to_vec(),
        h(hash)
    );
    let key = PrivateKey::from_bytes(Algorithm::Secp256k1, &h(sk)).unwrap();
    let public = key.public_key().unwrap();
    let options = SignOptions {
        hash: Some(MessageHash::Keccak256),
        recoverable: true,
    };
    let signature = key.sign(&h(data), options).unwrap();
    assert_eq!(hex::encode(&signature), format!("{r}{s}{v:02x}"));
    verify(Algorithm::Secp256k1, &public, &h(data), options, &signature).unwrap();
    assert!(libsecp256k1_verifies(
        &public,
        h(hash).try_into().unwrap(),
        &signature
    ));
    // The same digest given as is signs the same way.
    let prehashed = SignOptions {
        hash: Some(MessageHash::Prehashed),
        recoverable: true,
    };
    assert_eq!(key.sign(&h(hash), prehashed).unwrap(), signature);
}

#[test]
fn random_keys_and_messages_verify_with_the_independent_implementations() {
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(2026);
    for i in 0..64usize {
        let mut message = vec![0u8; i * 7];
        rng.fill_bytes(&mut message);
        let ed = PrivateKey::generate(Algorithm::Ed25519, &mut rng);
        let sig = ed.sign(&message, SignOptions::default()).unwrap();
        assert!(ring_verifies(&ed.public_key().unwrap(), &message, &sig));

        let k = PrivateKey::generate(Algorithm::Secp256k1, &mut rng);
        let public = k.public_key().unwrap();
        for hash in [MessageHash::Sha256, MessageHash::Keccak256] {
            let options = SignOptions {
                hash: Some(hash),
                recoverable: i % 2 == 0,
            };
            let sig = k.sign(&message, options).unwrap();
            assert!(libsecp256k1_verifies(
                &public,
                hash.digest(&message).unwrap(),
                &sig
            ));
        }
    }
    // The audit digest is SHA-256 of the message as sent, whatever the key hashed.
    assert_eq!(
        hex::encode(message_digest(b"abc")),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

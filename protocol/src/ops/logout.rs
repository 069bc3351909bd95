//! `logout`: ends the session on every instance. Both the request
//! ([`crate::OpRequest::Logout`]) and its answer ([`crate::OpResponse::LoggedOut`]) carry
//! nothing: the session that seals the request is the one that ends.

#[cfg(test)]
mod tests {
    use crate::{OpRequest, OpResponse};

    #[test]
    fn a_logout_and_its_answer_are_one_byte_each() {
        assert_eq!(OpRequest::Logout.encode().len(), 1);
        assert_eq!(
            OpRequest::decode(&OpRequest::Logout.encode()).unwrap(),
            OpRequest::Logout
        );
        assert_eq!(
            OpResponse::decode(&OpResponse::LoggedOut.encode()).unwrap(),
            OpResponse::LoggedOut
        );
    }
}

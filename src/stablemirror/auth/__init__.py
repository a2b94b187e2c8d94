"""Authentication and authorization: identities, tokens, roles and IAM-style policies."""

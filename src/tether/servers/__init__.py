"""The servers Tether runs itself (one module each), apart from the providers that administer
them."""

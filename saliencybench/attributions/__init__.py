"""Attribution methods; every module here is imported by the registry and registers its methods."""

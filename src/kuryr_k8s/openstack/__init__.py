"""openstack layer."""

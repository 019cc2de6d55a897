################################################################################
#
# rkllmd
#
################################################################################

# The external tree lives in board/buildroot/ of the rkllmd sources.
RKLLMD_SITE = $(BR2_EXTERNAL_RKLLMD_PATH)/../..
RKLLMD_SITE_METHOD = local
RKLLMD_VERSION = $(shell sed -n '/^version = /{s/^version = "\(.*\)"$$/\1/p;q}' \
	$(RKLLMD_SITE)/Cargo.toml)
RKLLMD_LICENSE = MIT or Apache-2.0
RKLLMD_LICENSE_FILES = LICENSE
RKLLMD_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS = --exclude=/target/

# rkllmd dlopens the runtime when it starts, so rkllm-runtime is
# selected but not a build dependency. RKLLM_LIB_DIR being set tells
# build.rs not to build the runtime simulator; its value, the
# runtime's directory on the target, is not used.
RKLLMD_CARGO_ENV = RKLLM_LIB_DIR=/usr/lib

# The install step builds again: it needs the same features.
ifeq ($(BR2_PACKAGE_RKLLM_RUNTIME_1_2_3),y)
RKLLMD_CARGO_BUILD_OPTS = --features rkllm-1-2
RKLLMD_CARGO_INSTALL_OPTS = --features rkllm-1-2
endif

# A local site skips the download step, where the cargo
# infrastructure vendors the crates; vendor them here so that the
# offline build finds them.
define RKLLMD_VENDOR_CRATES
	mkdir -p $(BR_CARGO_HOME) $(@D)/.cargo
	cd $(@D) && $(HOST_MAKE_ENV) $(PKG_COMMON_CARGO_ENV) \
		flock $(BR_CARGO_HOME)/.br-lock \
		cargo vendor --locked VENDOR > $(@D)/.cargo/config.toml
endef
RKLLMD_PRE_CONFIGURE_HOOKS += RKLLMD_VENDOR_CRATES

# The start scripts run the daemon as rkllmd:rkllm; members of rkllm
# may use the socket.
define RKLLMD_USERS
	rkllmd -1 rkllm -1 * - - - rkllmd daemon
endef

define RKLLMD_INSTALL_CONFIG
	$(INSTALL) -D -m 0644 $(@D)/board/etc/rkllmd.conf \
		$(TARGET_DIR)/etc/rkllmd/rkllmd.conf
endef
RKLLMD_POST_INSTALL_TARGET_HOOKS += RKLLMD_INSTALL_CONFIG

define RKLLMD_INSTALL_INIT_SYSV
	$(INSTALL) -D -m 0755 $(@D)/board/init.d/S95rkllmd \
		$(TARGET_DIR)/etc/init.d/S95rkllmd
	$(INSTALL) -D -m 0644 $(@D)/board/default/rkllmd \
		$(TARGET_DIR)/etc/default/rkllmd
endef

define RKLLMD_INSTALL_INIT_OPENRC
	$(INSTALL) -D -m 0755 $(@D)/board/openrc/rkllmd \
		$(TARGET_DIR)/etc/init.d/rkllmd
	$(INSTALL) -D -m 0644 $(@D)/board/openrc/conf.d/rkllmd \
		$(TARGET_DIR)/etc/conf.d/rkllmd
endef

define RKLLMD_INSTALL_INIT_SYSTEMD
	$(INSTALL) -D -m 0644 $(@D)/board/systemd/rkllmd.service \
		$(TARGET_DIR)/usr/lib/systemd/system/rkllmd.service
endef

$(eval $(cargo-package))

################################################################################
#
# rkllm-runtime
#
################################################################################

RKLLM_RUNTIME_VERSION = $(call qstrip,$(BR2_PACKAGE_RKLLM_RUNTIME_VERSION))
RKLLM_RUNTIME_LOCAL_PATH = $(call qstrip,$(BR2_PACKAGE_RKLLM_RUNTIME_LOCAL_PATH))
ifeq ($(BR2_PACKAGE_RKLLM_RUNTIME_FROM_GITHUB),y)
RKLLM_RUNTIME_SITE = $(call github,airockchip,rknn-llm,release-v$(RKLLM_RUNTIME_VERSION))
else ifneq ($(RKLLM_RUNTIME_LOCAL_PATH),)
RKLLM_RUNTIME_SITE = $(RKLLM_RUNTIME_LOCAL_PATH)
RKLLM_RUNTIME_SITE_METHOD = local
else
# Nothing to fetch until the path is set.
RKLLM_RUNTIME_SOURCE =
ifeq ($(BR_BUILDING)$(BR2_PACKAGE_RKLLM_RUNTIME),yy)
$(error BR2_PACKAGE_RKLLM_RUNTIME_LOCAL_PATH is empty: set it to a checkout of rknn-llm at release-v$(RKLLM_RUNTIME_VERSION), or choose the GitHub download)
endif
endif
# BSD-3-Clause terms plus a clause on the bundled open source parts
# (ggml, llama.cpp, under MIT). Binary redistribution is allowed
# with the notice, so the default REDISTRIBUTE (YES) applies.
RKLLM_RUNTIME_LICENSE = BSD-3-Clause-like, MIT (ggml, llama.cpp)
RKLLM_RUNTIME_LICENSE_FILES = LICENSE

RKLLM_RUNTIME_API_DIR = rkllm-runtime/Linux/librkllm_api

# A local checkout of rknn-llm also holds the toolkit, documents and
# demos: copy only the files this package uses.
RKLLM_RUNTIME_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS = \
	--include=/LICENSE \
	--include=/rkllm-runtime/ \
	--include=/rkllm-runtime/Linux/ \
	--include=/$(RKLLM_RUNTIME_API_DIR)/ \
	--include=/$(RKLLM_RUNTIME_API_DIR)/aarch64/ \
	--include=/$(RKLLM_RUNTIME_API_DIR)/aarch64/librkllmrt.so \
	--include=/$(RKLLM_RUNTIME_API_DIR)/include/ \
	--include=/$(RKLLM_RUNTIME_API_DIR)/include/rkllm.h \
	'--exclude=*'

ifeq ($(BR2_PACKAGE_RKLLM_RUNTIME_1_2_3),y)
RKLLM_RUNTIME_ABI = 1.2
else
RKLLM_RUNTIME_ABI = 1.3
endif

# rkllmd carries the header of each release it supports; the
# runtime's own header must be that one, byte for byte, or rkllmd
# would call it with the wrong ABI.
RKLLM_RUNTIME_RKLLMD_HEADER = \
	$(BR2_EXTERNAL_RKLLMD_PATH)/../../vendor/rkllm/$(RKLLM_RUNTIME_ABI)/rkllm.h

define RKLLM_RUNTIME_BUILD_CMDS
	@cmp -s $(@D)/$(RKLLM_RUNTIME_API_DIR)/include/rkllm.h \
		$(RKLLM_RUNTIME_RKLLMD_HEADER) || { \
		echo "rkllm-runtime: $(RKLLM_RUNTIME_SITE) is not rknn-llm" \
			"release-v$(RKLLM_RUNTIME_VERSION): its rkllm.h differs" \
			"from $(RKLLM_RUNTIME_RKLLMD_HEADER)" >&2; \
		exit 1; }
endef

define RKLLM_RUNTIME_INSTALL_TARGET_CMDS
	$(INSTALL) -D -m 0755 $(@D)/$(RKLLM_RUNTIME_API_DIR)/aarch64/librkllmrt.so \
		$(TARGET_DIR)/usr/lib/librkllmrt.so
	$(INSTALL) -D -m 0644 $(@D)/LICENSE \
		$(TARGET_DIR)/usr/share/licenses/rkllm-runtime/LICENSE
endef

$(eval $(generic-package))

include $(sort $(wildcard $(BR2_EXTERNAL_RKLLMD_PATH)/package/*/*.mk))

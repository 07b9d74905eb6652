"""Two-view image augmentation on the GPU, parameters drawn per sample.

(Interface stub; implemented in the engine issue.)

    spec = AugmentSpec(...)                       # the policy a method asks for
    aug = GPUAugment(spec, out_size=32)           # stateless module
    v = aug(x_uint8_nhwc_on_device, generator)    # float32 NCHW in [0, 1] (or normalised)
"""

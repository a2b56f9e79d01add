/* transformers' BlipImageProcessor: convert to RGB (done by the decoder), resize
 * with Pillow, rescale by 1/255, normalise with the CLIP mean and std. The
 * arithmetic follows numpy's: the uint8 image times a Python float is a float64
 * product, cast to float32; mean and std are float32 and the rest is float32. */
#include "mllm4rec/image.h"

#include <jansson.h>
#include <string.h>

void mr_image_processor_default(mr_image_processor *p, int size) {
    static const float mean[3] = {0.48145466f, 0.4578275f, 0.40821073f};
    static const float std[3] = {0.26862954f, 0.26130258f, 0.27577711f};
    memset(p, 0, sizeof *p);
    p->do_resize = p->do_rescale = p->do_normalize = 1;
    p->width = p->height = size;
    p->resample = MR_RESAMPLE_BICUBIC;
    p->rescale_factor = 1.0 / 255.0;
    memcpy(p->mean, mean, sizeof mean);
    memcpy(p->std, std, sizeof std);
}

static int get_bool(json_t *root, const char *key, int *out, const char *path, mr_error *e) {
    json_t *v = json_object_get(root, key);
    if (!v) return MR_OK;
    if (!json_is_boolean(v)) return mr_fail(e, MR_ERR_INPUT, "%s: \"%s\" must be true or false", path, key);
    *out = json_is_true(v);
    return MR_OK;
}

static int get_int(json_t *v, const char *key, int *out, const char *path, mr_error *e) {
    if (!json_is_integer(v) || json_integer_value(v) <= 0 || json_integer_value(v) > 65536)
        return mr_fail(e, MR_ERR_INPUT, "%s: \"%s\" must be a positive integer", path, key);
    *out = (int)json_integer_value(v);
    return MR_OK;
}

static int get_triple(json_t *root, const char *key, float out[3], const char *path, mr_error *e) {
    json_t *v = json_object_get(root, key);
    if (!v) return MR_OK;
    if (json_is_number(v)) { /* a single value for every channel */
        out[0] = out[1] = out[2] = (float)json_number_value(v);
        return MR_OK;
    }
    if (!json_is_array(v) || json_array_size(v) != 3)
        return mr_fail(e, MR_ERR_INPUT, "%s: \"%s\" must be a list of 3 numbers", path, key);
    for (int i = 0; i < 3; i++) {
        json_t *x = json_array_get(v, i);
        if (!json_is_number(x)) return mr_fail(e, MR_ERR_INPUT, "%s: \"%s\"[%d] must be a number", path, key, i);
        out[i] = (float)json_number_value(x);
    }
    return MR_OK;
}

int mr_image_processor_load(mr_image_processor *p, const char *path, mr_error *e) {
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root) return mr_fail(e, MR_ERR_INPUT, "%s:%d: %s", path, je.line, je.text);
    int rc = MR_OK;
    if (!json_is_object(root)) {
        rc = mr_fail(e, MR_ERR_INPUT, "%s: expected a JSON object", path);
        goto done;
    }
    if ((rc = get_bool(root, "do_resize", &p->do_resize, path, e)) ||
        (rc = get_bool(root, "do_rescale", &p->do_rescale, path, e)) ||
        (rc = get_bool(root, "do_normalize", &p->do_normalize, path, e)) ||
        (rc = get_triple(root, "image_mean", p->mean, path, e)) ||
        (rc = get_triple(root, "image_std", p->std, path, e)))
        goto done;
    json_t *size = json_object_get(root, "size");
    if (size) {
        if (json_is_integer(size)) {
            if ((rc = get_int(size, "size", &p->width, path, e))) goto done;
            p->height = p->width;
        } else if (json_is_object(size) && json_object_get(size, "height") && json_object_get(size, "width")) {
            if ((rc = get_int(json_object_get(size, "height"), "size.height", &p->height, path, e)) ||
                (rc = get_int(json_object_get(size, "width"), "size.width", &p->width, path, e)))
                goto done;
        } else {
            rc = mr_fail(e, MR_ERR_INPUT, "%s: \"size\" must be an integer or {\"height\", \"width\"}", path);
            goto done;
        }
    }
    json_t *rs = json_object_get(root, "resample");
    if (rs) {
        if (!json_is_integer(rs) || (json_integer_value(rs) != MR_RESAMPLE_BICUBIC &&
                                     json_integer_value(rs) != MR_RESAMPLE_BILINEAR)) {
            rc = mr_fail(e, MR_ERR_INPUT, "%s: \"resample\" must be 2 (bilinear) or 3 (bicubic)", path);
            goto done;
        }
        p->resample = (int)json_integer_value(rs);
    }
    json_t *rf = json_object_get(root, "rescale_factor");
    if (rf) {
        if (!json_is_number(rf)) {
            rc = mr_fail(e, MR_ERR_INPUT, "%s: \"rescale_factor\" must be a number", path);
            goto done;
        }
        p->rescale_factor = json_number_value(rf);
    }
    for (int c = 0; c < 3; c++)
        if (!(p->std[c] != 0.0f)) {
            rc = mr_fail(e, MR_ERR_INPUT, "%s: \"image_std\" must not be zero", path);
            goto done;
        }
done:
    json_decref(root);
    return rc;
}

int mr_image_to_pixels(const mr_image_processor *p, const mr_image *img, float *pixels, mr_image *resized,
                       mr_error *e) {
    mr_image local = {0, 0, NULL};
    const mr_image *src = img;
    if (p->do_resize) {
        int rc = mr_image_resize(img, p->width, p->height, p->resample, &local, e);
        if (rc) return rc;
        src = &local;
    } else if (img->width != p->width || img->height != p->height) {
        return mr_fail(e, MR_ERR_INPUT, "image is %dx%d, the model needs %dx%d and do_resize is false", img->width,
                       img->height, p->width, p->height);
    }
    size_t hw = (size_t)p->width * p->height;
    for (size_t i = 0; i < hw; i++)
        for (int c = 0; c < 3; c++) {
            uint8_t b = src->rgb[3 * i + c];
            float v = p->do_rescale ? (float)((double)b * p->rescale_factor) : (float)b;
            if (p->do_normalize) v = (v - p->mean[c]) / p->std[c];
            pixels[c * hw + i] = v;
        }
    if (resized && src == &local)
        *resized = local;
    else {
        if (resized) {
            resized->width = resized->height = 0;
            resized->rgb = NULL;
        }
        mr_image_free(&local);
    }
    return MR_OK;
}
